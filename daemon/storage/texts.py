"""What the kiosk says to a client, per language: error messages and the SMS texts.

A screen shows `message` as is; `code` is for the front end's own logic. Languages without a text
fall back to English, so a profile may list a language before its translations exist.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FALLBACK = "en"

MESSAGES: dict[str, dict[str, str]] = {
    "en": {
        "no_profile": "This locker is not set up for rentals yet. Please contact support.",
        "not_ready": "The locker is starting. Please try again in a moment.",
        "storage_full": "The locker cannot take new operations right now. Please try again later.",
        "bad_request": "The request is not valid: {detail}",
        "not_found": "The kiosk API has nothing at {path}.",
        "method_not_allowed": "{path} does not take {method}.",
        "body_too_large": "The request is too large (at most {limit} bytes).",
        "body_timeout": "The request came too slowly (more than {seconds} s). Please try again.",
        "unknown_rental": "This rental was not found or has expired. Please start again.",
        "no_free_cell": "No free cell of this size is available right now.",
        "unknown_size": "This locker has no cells of that kind.",
        "bad_period": "Please choose one of the offered periods.",
        "wrong_step": "Please finish the previous step first ({detail}).",
        "bad_phone": "The phone number is not valid: {detail}",
        "sms_too_soon": "Please wait {seconds} seconds before asking for a new code.",
        "sms_too_many": "Too many codes were sent to this number. Please try again later.",
        "sms_failed": "The SMS could not be sent. Please try again.",
        "wrong_code": "The code is not right. {attempts} tries left.",
        "code_expired": "The code has expired. Please ask for a new one.",
        "code_locked": "Too many wrong codes. Please ask for a new code.",
        "payment_declined": "The payment was declined: {detail}. No money was taken.",
        "payment_cancelled": "The payment was cancelled. No money was taken.",
        "terminal_offline": "The card terminal is not available. Please try again later.",
        "payment_unknown": "We could not confirm the payment. If money was taken it will be "
        "returned automatically.",
        "no_payment": "Card payments are not available at this locker.",
        "cell_unavailable": "The cell cannot be opened right now ({detail}). Any payment will be "
        "returned.",
        "wrong_pin": "Wrong cell number or PIN. {attempts} tries left.",
        "pin_locked": "Too many wrong PINs. PIN entry on this cell is locked for {wait}.",
        "debt": "Please pay the unpaid time ({amount}) first.",
        "due_changed": "The amount has changed: {amount} is due now. Please confirm again.",
        "temporary_disabled": "Opening the cell during the rental is not offered here.",
        "extension_disabled": "Extending a rental is not offered with this payment option.",
        "beyond_limit": "A rental cannot run longer than {hours} h. Please pick up your things.",
        "not_occupied": "This cell has no rental.",
        "busy": "The cell is busy. Please wait a moment.",
        "door_open": "The door of the cell is open. Please close it first.",
        "unknown_language": "This language is not offered.",
        "sms_code": "Your locker code: {code}",
        "sms_pin": "Locker {locker}, cell {cell}: your PIN is {pin}. Keep it secret.",
        "receipt_subject": "Your receipt from locker {locker}",
    },
    "ru": {
        "no_profile": "Камера хранения ещё не настроена. Обратитесь в поддержку.",
        "not_ready": "Камера запускается. Повторите попытку через минуту.",
        "storage_full": "Камера сейчас не может принять новые операции. Попробуйте позже.",
        "bad_request": "Неверный запрос: {detail}",
        "not_found": "По адресу {path} в API киоска ничего нет.",
        "method_not_allowed": "Адрес {path} не принимает {method}.",
        "body_too_large": "Слишком большой запрос (не больше {limit} байт).",
        "body_timeout": "Запрос передавался слишком долго (больше {seconds} с). Повторите.",
        "unknown_rental": "Аренда не найдена или истекла. Начните заново.",
        "no_free_cell": "Свободных ячеек такого размера сейчас нет.",
        "unknown_size": "В этой камере нет таких ячеек.",
        "bad_period": "Выберите один из предложенных сроков.",
        "wrong_step": "Сначала завершите предыдущий шаг ({detail}).",
        "bad_phone": "Неверный номер телефона: {detail}",
        "sms_too_soon": "Новый код можно запросить через {seconds} с.",
        "sms_too_many": "На этот номер отправлено слишком много кодов. Попробуйте позже.",
        "sms_failed": "Не удалось отправить SMS. Попробуйте ещё раз.",
        "wrong_code": "Неверный код. Осталось попыток: {attempts}.",
        "code_expired": "Срок действия кода истёк. Запросите новый.",
        "code_locked": "Слишком много неверных кодов. Запросите новый код.",
        "payment_declined": "Оплата отклонена: {detail}. Деньги не списаны.",
        "payment_cancelled": "Оплата отменена. Деньги не списаны.",
        "terminal_offline": "Терминал оплаты недоступен. Попробуйте позже.",
        "payment_unknown": "Не удалось подтвердить оплату. Если деньги списаны, они вернутся "
        "автоматически.",
        "no_payment": "Оплата картой в этой камере недоступна.",
        "cell_unavailable": "Ячейку сейчас нельзя открыть ({detail}). Оплата будет возвращена.",
        "wrong_pin": "Неверный номер ячейки или PIN. Осталось попыток: {attempts}.",
        "pin_locked": "Слишком много неверных PIN. Ввод PIN для ячейки заблокирован на {wait}.",
        "debt": "Сначала оплатите задолженность ({amount}).",
        "due_changed": "Сумма изменилась: сейчас к оплате {amount}. Подтвердите ещё раз.",
        "temporary_disabled": "Временное открытие ячейки здесь недоступно.",
        "extension_disabled": "Продление недоступно при этом способе оплаты.",
        "beyond_limit": "Срок хранения не может превышать {hours} ч. Заберите, пожалуйста, вещи.",
        "not_occupied": "Эта ячейка не арендована.",
        "busy": "Ячейка занята. Подождите немного.",
        "door_open": "Дверца ячейки открыта. Сначала закройте её.",
        "unknown_language": "Этот язык не поддерживается.",
        "sms_code": "Код для камеры хранения: {code}",
        "sms_pin": "Камера {locker}, ячейка {cell}: ваш PIN {pin}. Никому не сообщайте.",
        "receipt_subject": "Ваша квитанция, камера {locker}",
    },
}


#: Names of what a payment is for, on receipts and on the terminal's screen.
ITEM_NAMES: dict[str, dict[str, str]] = {
    "en": {"rent": "Storage, cell {cell}", "extend": "Storage extension, cell {cell}",
           "pickup": "Storage time, cell {cell}", "temporary": "Storage time so far, cell {cell}",
           "slip": "Storage, cell {cell}: pay at pickup"},
    "ru": {"rent": "Хранение, ячейка {cell}", "extend": "Продление хранения, ячейка {cell}",
           "pickup": "Время хранения, ячейка {cell}",
           "temporary": "Хранение по текущий момент, ячейка {cell}",
           "slip": "Хранение, ячейка {cell}: оплата при выдаче"},
}  # fmt: skip


def item_name(language: str, kind: str, cell: int) -> str:
    """"Storage, cell 3" in the language (English if missing).

    kind: rent, extend, pickup, temporary or slip.
    """
    return ITEM_NAMES.get(language, ITEM_NAMES[FALLBACK])[kind].format(cell=cell)


#: "15 s", "5 min": a wait as the screen says it (seconds under a minute, else minutes up).
_WAIT = {"en": ("{n} s", "{n} min"), "ru": ("{n} с", "{n} мин")}


def wait_text(language: str, seconds: int) -> str:
    short, long = _WAIT.get(language, _WAIT[FALLBACK])
    return short.format(n=seconds) if seconds < 60 else long.format(n=-(-seconds // 60))


def text(language: str, key: str, params: Mapping[str, Any] | None = None) -> str:
    """The text of `key` in `language` (English if missing), with `{name}` filled in; `{wait}`
    is made from a `seconds` parameter."""
    table = MESSAGES.get(language, MESSAGES[FALLBACK])
    template = table.get(key) or MESSAGES[FALLBACK].get(key) or key
    params = dict(params or {})
    if "seconds" in params and "wait" not in params:
        params["wait"] = wait_text(language, int(params["seconds"]))
    try:
        return template.format(**params)
    except (KeyError, IndexError):
        return template
