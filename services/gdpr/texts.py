"""The words of every code, notice and reminder the gdpr service sends to a person, in Swedish and English.

``render(kind, language, **values)`` gives (subject, body).  Values are filled in only when the
message is sent; no text here is ever logged or put in an event.
"""

from __future__ import annotations

LANGUAGES = ("sv", "en")

_COMPLAINT = {
    "en": "If you are not satisfied, you may lodge a complaint with the Swedish Authority for Privacy "
    "Protection (IMY, www.imy.se) or go to court.",
    "sv": "Om du inte är nöjd kan du klaga hos Integritetsskyddsmyndigheten (IMY, www.imy.se) eller gå till domstol.",
}

TEXTS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "code": (
            "Your verification code",
            "Your code is {code}. It is valid for {minutes} minutes.\n"
            "If you did not ask for it, you can ignore this message.",
        ),
        "received": (
            "We have received your request",
            "We received your request ({type}) on {created}. Reference: {ref}.\nWe will answer by {due} at the latest.",
        ),
        "extended": (
            "Your request needs more time",
            "We need more time to answer your request {ref}: the deadline was extended by {months} month(s) "
            "to {due}.\nReason: {reason}",
        ),
        "completed_export": (
            "Your data is ready",
            "The copy of your data (request {ref}) is ready. Download it once, before {expires}:\n{link}\n\n"
            "The file is encrypted. The passphrase comes in a separate message. The download page says how to open it.",
        ),
        "completed_erase": (
            "Your data has been erased",
            "Your request {ref} is done: your data was erased, except what the law obliges us to keep.",
        ),
        "rejected": (
            "Your request was refused",
            "We have refused your request {ref}.\nReason: {reason}\n\n{complaint}",
        ),
        "passphrase": (
            "The passphrase of your data",
            "The passphrase of your download (request {ref}) is: {passphrase}",
        ),
        "reminder": ("A request is due soon", "Data-subject request {ref} ({type}, {status}) is due on {due}."),
    },
    "sv": {
        "code": (
            "Din kontrollkod",
            "Din kod är {code}. Den gäller i {minutes} minuter.\nOm du inte har bett om den kan du bortse från meddelandet.",
        ),
        "received": (
            "Vi har tagit emot din begäran",
            "Vi tog emot din begäran ({type}) {created}. Referens: {ref}.\nVi svarar senast {due}.",
        ),
        "extended": (
            "Din begäran behöver mer tid",
            "Vi behöver mer tid för din begäran {ref}: tidsfristen har förlängts med {months} månad(er) "
            "till {due}.\nSkäl: {reason}",
        ),
        "completed_export": (
            "Dina uppgifter är klara",
            "Kopian av dina uppgifter (begäran {ref}) är klar. Hämta den en gång, före {expires}:\n{link}\n\n"
            "Filen är krypterad. Lösenfrasen kommer i ett separat meddelande. Hämtningssidan beskriver hur du öppnar den.",
        ),
        "completed_erase": (
            "Dina uppgifter har raderats",
            "Din begäran {ref} är klar: dina uppgifter har raderats, utom det lagen kräver att vi sparar.",
        ),
        "rejected": ("Din begäran har avslagits", "Vi har avslagit din begäran {ref}.\nSkäl: {reason}\n\n{complaint}"),
        "passphrase": ("Lösenfras för dina uppgifter", "Lösenfrasen för din hämtning (begäran {ref}) är: {passphrase}"),
        "reminder": ("En begäran förfaller snart", "Begäran {ref} ({type}, {status}) ska besvaras senast {due}."),
    },
}

_TYPES = {
    "en": {"export": "a copy of your data", "erase": "erasure"},
    "sv": {"export": "kopia av dina uppgifter", "erase": "radering"},
}


def render(kind: str, language: str, **values) -> tuple[str, str]:
    language = language if language in LANGUAGES else "en"
    subject, body = TEXTS[language][kind]
    if "type" in values:
        values["type"] = _TYPES[language].get(values["type"], values["type"])
    values.setdefault("complaint", _COMPLAINT[language])
    return subject, body.format(**values)
