"""E-mail through an SMTP server (aiosmtplib), as the locker and the console both send it.

STARTTLS on 587 or implicit TLS on 465. Failures are results, never exceptions; SMTP's 4xx ("try
again later") is transient, its 5xx final. A detail never holds the message's text.

aiosmtplib and the e-mail composer are imported with the first message: a locker that only
configures the server (and may never send) does not carry them in memory.

A message given a `ref` has the Message-ID `<ref@sender's domain>`: sent again (after a crash
left it unknown whether the server took it), it is the same message (Gmail keeps one copy per
Message-ID; any client shows the same message, never a different one). SMTP itself has no way
to refuse a duplicate, so this is the most "exactly once" e-mail allows.
"""

from __future__ import annotations

from contract.notifier_settings import SmtpSettings
from fleet_io.delivery import DeliveryResult, smtp_code_may_pass


def message_id(ref: str | None, sender: str) -> str:
    """`<ref@domain>` for a message with a reference (the same on every resend), else fresh."""
    domain = sender.rpartition("@")[2] or None
    if ref is None:
        from email.utils import make_msgid

        return make_msgid(domain=domain)
    safe = "".join(ch for ch in ref if ch.isalnum() or ch in ".-_")
    return f"<{safe}@{domain or 'localhost'}>"


class SmtpEmail:
    """One SMTP server and one sender address."""

    def __init__(
        self,
        host: str,
        sender: str,
        *,
        port: int = 587,
        starttls: bool = True,
        use_tls: bool = False,
        username: str | None = None,
        password: str | None = None,
        timeout_s: float = 15.0,
        validate_certs: bool = True,
    ) -> None:
        if starttls and use_tls:
            raise ValueError("choose STARTTLS or implicit TLS for SMTP, not both")
        self.host = host
        self.sender = sender
        self.port = port
        self.starttls = starttls
        self.use_tls = use_tls
        self.username = username
        self.password = password
        self.timeout_s = timeout_s
        self.validate_certs = validate_certs

    @classmethod
    def of(cls, settings: SmtpSettings) -> SmtpEmail:
        """The server of a `[notifier.smtp]` section."""
        s = settings
        return cls(s.host, s.sender, port=s.port, starttls=s.starttls, use_tls=s.use_tls,
                   username=s.username, password=s.password, timeout_s=s.timeout_s)

    async def send_sms(self, phone: str, text: str, *, ref: str | None = None
                       ) -> DeliveryResult:
        return DeliveryResult(False, "sms", "an SMTP server does not send SMS")

    async def send_email(self, to: str, subject: str, text: str, *, ref: str | None = None
                         ) -> DeliveryResult:
        from email.message import EmailMessage
        from email.utils import formatdate

        import aiosmtplib

        message = EmailMessage()
        message["From"] = self.sender
        message["To"] = to
        message["Subject"] = subject
        message["Date"] = formatdate(localtime=False)
        message["Message-ID"] = message_id(ref, self.sender)
        message.set_content(text, charset="utf-8")
        try:
            errors, reply = await aiosmtplib.send(
                message,
                hostname=self.host,
                port=self.port,
                username=self.username,
                password=self.password,
                start_tls=self.starttls,
                use_tls=self.use_tls,
                timeout=self.timeout_s,
                validate_certs=self.validate_certs,
            )
        except aiosmtplib.SMTPResponseException as exc:
            return DeliveryResult(False, "email", f"SMTP {self.host}: {exc.code} {exc.message}",
                                  exc.code, transient=smtp_code_may_pass(exc.code))
        except (aiosmtplib.SMTPException, OSError) as exc:
            return DeliveryResult(False, "email", f"SMTP {self.host}: {exc}", transient=True)
        if to in errors:
            code = errors[to].code
            return DeliveryResult(False, "email", f"SMTP {self.host} refused the recipient: {code}",
                                  code, transient=smtp_code_may_pass(code))
        return DeliveryResult(True, "email", f"SMTP {self.host}: {reply}")
