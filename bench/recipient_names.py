"""Generated recipients for the parcel benchmarks: Russian and English names, departments,
numbers, phones and e-mail addresses, the same for the same seed."""

from __future__ import annotations

import random

from contract.recipients import Recipient

RU_FIRST = ["Александр", "Алексей", "Анна", "Борис", "Виктор", "Галина", "Дмитрий", "Елена",
            "Ирина", "Игорь", "Кирилл", "Людмила", "Мария", "Наталья", "Олег", "Ольга", "Пётр",
            "Сергей", "Светлана", "Татьяна", "Юрий", "Юлия", "Фёдор", "Ярослав"]
RU_LAST = ["Иванов", "Смирнов", "Кузнецов", "Попов", "Васильев", "Петров", "Соколов",
           "Михайлов", "Новиков", "Фёдоров", "Морозов", "Волков", "Алексеев", "Лебедев",
           "Семёнов", "Егоров", "Павлов", "Козлов", "Степанов", "Николаев", "Орлов", "Андреев",
           "Макаров", "Никитин", "Захаров", "Зайцев", "Соловьёв", "Борисов", "Яковлев"]
EN_FIRST = ["James", "Mary", "John", "Patricia", "Robert", "Jennifer", "Michael", "Linda",
            "William", "Elizabeth", "David", "Barbara", "Richard", "Susan", "Joseph", "Jessica"]
EN_LAST = ["Smith", "Johnson", "Williams", "Brown", "Jones", "Garcia", "Miller", "Davis",
           "Rodriguez", "Martinez", "Hernandez", "Lopez", "Wilson", "Anderson", "Thomas",
           "Taylor", "Moore", "Jackson", "Martin", "Lee", "Thompson", "White", "Harris"]
DEPARTMENTS = ["Бухгалтерия", "Отдел кадров", "Склад", "Юридический отдел", "IT", "Sales",
               "Marketing", "Reception", "Logistics", "Служба безопасности", "Канцелярия"]


def recipients(count: int, seed: int = 12) -> list[Recipient]:
    """`count` valid recipients, two thirds with Russian names."""
    rnd = random.Random(seed)
    out = []
    for i in range(count):
        if rnd.random() < 2 / 3:
            last = rnd.choice(RU_LAST)
            first = rnd.choice(RU_FIRST)
            if first.endswith(("а", "я")):
                last += "а"
            name = f"{last} {first}"
            language = "ru"
        else:
            name = f"{rnd.choice(EN_FIRST)} {rnd.choice(EN_LAST)}"
            language = "en"
        phone = f"+79{rnd.randrange(10**9):09d}" if rnd.random() < 0.9 else None
        email = f"user{i}@example.com" if phone is None or rnd.random() < 0.5 else None
        out.append(Recipient(id=f"r{i:05d}", name=name, department=rnd.choice(DEPARTMENTS),
                             number=str(100 + i), phone=phone, email=email, language=language))
    return out
