"""What the parcel business says, per language: the recipient's SMS and e-mail, the
administrator's e-mails, and the kiosk's refusals.

Notifications are in the recipient's language, else the locker's (`parcels.language`); a
language without a text falls back to English. The arrival text is the only one that carries a
code: it is rendered once, sent, and not stored (the outbox keeps the rendered message only until
it is sent). Placeholders are the same in every language (tests/test_parcel_texts.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

FALLBACK = "en"

#: Notification kinds (daemon/parcels/effects.py `NoticeKind`) and the daily cell report:
#: (subject, text) per language; the SMS is the text, the e-mail is subject + text.
NOTICES: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "parcel_arrived": (
            "A parcel has arrived for you",
            "A parcel for you is in the locker at {address} ({opening_hours}). Your code: "
            "{code}{factor}. Please pick it up by {due}.",
        ),
        "parcel_added": (
            "Another parcel is waiting for you",
            "Another parcel for you was added to your cell in the locker at {address}. The code "
            "you received opens it for all of them. Please pick them up by {due}.",
        ),
        "parcel_reminder": (
            "Your parcel is waiting",
            "Your parcel in the locker at {address} waits until {due}. Use the code you "
            "received.",
        ),
        "parcel_expired": (
            "Your parcel was not picked up",
            "Your parcel in the locker at {address} was not picked up in time and will be "
            "returned to the sender.",
        ),
        "pickup_report": (
            "Parcel picked up at locker {locker}",
            "Cell {cell} of locker {locker}: parcel(s) {parcels} picked up at {time}.",
        ),
        "cell_report": (
            "Cell report of locker {locker}",
            "Locker {locker} at {time}: free {free}, occupied {occupied}; parcels waiting "
            "{waiting}, expired {expired}.",
        ),
    },
    "ru": {
        "parcel_arrived": (
            "Вам пришла посылка",
            "Для вас посылка в постамате по адресу {address} ({opening_hours}). Код доступа: "
            "{code}{factor}. Заберите её до {due}.",
        ),
        "parcel_added": (
            "Для вас ещё одна посылка",
            "В вашу ячейку в постамате по адресу {address} добавлена ещё одна посылка. "
            "Полученный код открывает ячейку для всех. Заберите их до {due}.",
        ),
        "parcel_reminder": (
            "Посылка ждёт вас",
            "Ваша посылка в постамате по адресу {address} ждёт до {due}. Используйте "
            "полученный код.",
        ),
        "parcel_expired": (
            "Посылка не была получена",
            "Ваша посылка в постамате по адресу {address} не была получена вовремя и будет "
            "возвращена отправителю.",
        ),
        "pickup_report": (
            "Посылка получена в постамате {locker}",
            "Ячейка {cell} постамата {locker}: посылки {parcels} получены в {time}.",
        ),
        "cell_report": (
            "Отчёт по ячейкам постамата {locker}",
            "Постамат {locker}, {time}: свободно {free}, занято {occupied}; посылок ждут "
            "{waiting}, просрочено {expired}.",
        ),
    },
}

#: After the code when the kiosk asks for the phone's last digits too.
FACTOR_HINT = {
    "en": " (with the last 4 digits of your phone number)",
    "ru": " (и последние 4 цифры вашего номера телефона)",
}

#: The kiosk's refusals, by the reason codes of the parcel core.
MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "duplicate_barcode": "This barcode is already in the locker.",
        "barcode_required": "Please scan the parcel's barcode.",
        "bad_size": "Please choose a cell size.",
        "bad_barcode": "This is not a barcode. Please scan again.",
        "no_recipient": "Please choose a recipient.",
        "wrong_recipient": "This parcel was announced for another recipient.",
        "duplicate_recipient": "This recipient exists already.",
        "cell_taken": "This cell holds another recipient's parcels.",
        "no_cell": "No free cell for a parcel of size {size}.",
        "larger_cell": "Size {asked} is full; a cell of size {size} is free.",
        "no_parcel": "There is no parcel here.",
        "duplicate_parcel": "This parcel is known already.",
        "no_return": "There is no such return.",
        "duplicate_return": "This return exists already.",
        "busy": "The cell is busy. Please wait a moment.",
        "illegal_transition": "This cannot be done now.",
        "wrong_code": "The code is not right.",
        "code_wait": "Please wait {seconds} s before the next try.",
        "code_paused": "Code entry is paused. Staff have been called; please try later.",
        "wrong_login": "Wrong code or PIN.",
        "login_locked": "Too many wrong PINs. This login is locked for {wait}.",
        "no_session": "Please log in.",
        "forbidden": "Your role does not allow this.",
        "reason_required": "Please give a reason.",
        "phone_digits_required": "Please enter the last 4 digits of your phone number too.",
        "unknown_recipient": "There is no such recipient.",
        "bad_recipient": "Please check the recipient's details: {detail}",
        "returns_disabled": "Returns are not taken at this locker.",
        "not_parcel_cell": "This is not a parcel cell.",
        "unknown_language": "The language {wanted} is not offered.",
    },
    "ru": {
        "duplicate_barcode": "Посылка с этим штрихкодом уже в постамате.",
        "barcode_required": "Отсканируйте штрихкод посылки.",
        "bad_size": "Выберите размер ячейки.",
        "bad_barcode": "Это не штрихкод. Отсканируйте ещё раз.",
        "no_recipient": "Выберите получателя.",
        "wrong_recipient": "Эта посылка ожидается для другого получателя.",
        "duplicate_recipient": "Такой получатель уже есть.",
        "cell_taken": "В этой ячейке посылки другого получателя.",
        "no_cell": "Нет свободной ячейки для посылки размера {size}.",
        "larger_cell": "Ячейки размера {asked} заняты; свободна ячейка размера {size}.",
        "no_parcel": "Здесь нет посылки.",
        "duplicate_parcel": "Эта посылка уже известна.",
        "no_return": "Такого возврата нет.",
        "duplicate_return": "Такой возврат уже есть.",
        "busy": "Ячейка занята. Подождите немного.",
        "illegal_transition": "Сейчас это сделать нельзя.",
        "wrong_code": "Неверный код.",
        "code_wait": "Подождите {seconds} с перед следующей попыткой.",
        "code_paused": "Ввод кодов приостановлен. Персонал вызван; попробуйте позже.",
        "wrong_login": "Неверный код или PIN.",
        "login_locked": "Слишком много неверных PIN. Вход заблокирован на {wait}.",
        "no_session": "Войдите в систему.",
        "forbidden": "Ваша роль этого не позволяет.",
        "reason_required": "Укажите причину.",
        "phone_digits_required": "Введите также последние 4 цифры номера телефона.",
        "unknown_recipient": "Такого получателя нет.",
        "bad_recipient": "Проверьте данные получателя: {detail}",
        "returns_disabled": "Этот постамат не принимает возвраты.",
        "not_parcel_cell": "Это не ячейка для посылок.",
        "unknown_language": "Язык {wanted} не поддерживается.",
    },
}


@dataclass(frozen=True)
class Message:
    """A rendered notification: the SMS is `text`, the e-mail is `subject` and `text`."""

    language: str
    subject: str
    text: str


def notice(kind: str, language: str | None, **params: Any) -> Message:
    """The notification `kind` in `language` (English if it has none); KeyError for an unknown
    kind or a missing placeholder. `factor=True` adds the phone-digits hint after the code."""
    lang = language if language in NOTICES else FALLBACK
    subject, text = NOTICES[lang][kind]
    factor = FACTOR_HINT[lang] if params.pop("factor", False) else ""
    return Message(lang, subject.format(**params), text.format(factor=factor, **params))


def message(reason: str, language: str | None, **params: Any) -> str:
    """The kiosk's text for a refusal; the reason code itself if none is written."""
    table = MESSAGES.get(language or FALLBACK, MESSAGES[FALLBACK])
    template = table.get(reason) or MESSAGES[FALLBACK].get(reason)
    return template.format(**params) if template else reason
