"""A mail's words: HTML made into text, the new text without quoted earlier mail and signatures,
and the labelled lines (``Telefoon: 06 12345678``) that carry the procedure's minimum contents.

Pure functions of strings: no I/O, no email package (intake/mail.py feeds them).
"""

from __future__ import annotations

import html
import re
from html.parser import HTMLParser

from complaints.contents import LABELS

# ------------------------------------------------------------------ HTML to text

_BLOCK = {"p", "div", "br", "li", "tr", "h1", "h2", "h3", "h4", "h5", "h6", "table", "ul", "ol", "pre",
          "hr", "address", "section", "article", "header", "footer", "dd", "dt"}
_SKIP = {"style", "script", "head", "title", "xml"}


class _Text(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skip = 0
        self.quote = 0
        self.line: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        tag = tag.lower()
        if tag in _SKIP:
            self.skip += 1
        elif tag == "blockquote" or (tag == "div" and _is_quote_div(attrs)):
            self._end_line()
            self.quote += 1 if tag == "blockquote" else 0
            if tag == "div":
                self.parts.append("\x00QUOTE\x00")
        elif tag in _BLOCK:
            self._end_line()
        if tag == "li":
            self.line.append("- ")

    def handle_endtag(self, tag: str) -> None:
        tag = tag.lower()
        if tag in _SKIP:
            self.skip = max(0, self.skip - 1)
        elif tag == "blockquote":
            self._end_line()
            self.quote = max(0, self.quote - 1)
        elif tag in _BLOCK:
            self._end_line()

    def handle_data(self, data: str) -> None:
        if not self.skip:
            self.line.append(re.sub(r"[ \t\r\n\f\u00a0]+", " ", data))

    def _end_line(self) -> None:
        text = "".join(self.line).strip()
        self.line = []
        prefix = "> " * self.quote
        self.parts.append(prefix + text if text or not prefix else prefix.rstrip())

    def text(self) -> str:
        self._end_line()
        text = "\n".join(self.parts)
        text = text.replace("\x00QUOTE\x00", _GMAIL_QUOTE_MARK)
        return re.sub(r"\n{3,}", "\n\n", text).strip()


def _is_quote_div(attrs: list[tuple[str, str | None]]) -> bool:
    """Gmail's and Outlook's wrappers of the mail being replied to."""
    for name, value in attrs:
        if name in ("class", "id") and value and re.search(r"gmail_quote|divRplyFwdMsg|appendonsend|"
                                                          r"moz-cite-prefix|OutlookMessageHeader", value):
            return True
    return False


#: Where HTML said the quoted earlier mail begins (a Gmail/Outlook quote wrapper).
_GMAIL_QUOTE_MARK = "\x00quoted mail follows\x00"


def without_marks(text: str) -> str:
    """``text`` for people: without the mark :func:`html_to_text` leaves where quoted mail begins."""
    return text.replace(_GMAIL_QUOTE_MARK + "\n", "").replace(_GMAIL_QUOTE_MARK, "")


def html_to_text(source: str) -> str:
    """Readable text of an HTML mail: paragraphs as lines, quoted mail marked with ``>`` (and, for
    :func:`new_text`, an invisible mark where a Gmail/Outlook quote wrapper begins)."""
    parser = _Text()
    try:
        parser.feed(source)
        parser.close()
    except Exception:  # noqa: BLE001 - HTMLParser is lenient; a failure leaves the tags stripped crudely
        return html.unescape(re.sub(r"<[^>]*>", " ", source)).strip()
    return parser.text()


# ------------------------------------------------------------ the new text of a reply

#: "Op di 1 dec 2026 om 10:00 schreef Level Up <info@level-up.nl>:" (clients wrap it over two lines).
_REPLY_INTRO = re.compile(r"^(?:Op|On|Am|Le)\b.{0,300}\b(?:schreef|wrote|schrieb|a écrit)\b[^:]{0,200}:$",
                          re.IGNORECASE)
_SEPARATOR = re.compile(r"^(?:-{2,}\s*(?:Original Message|Oorspronkelijk bericht|Urspr.ngliche Nachricht)\s*-{2,}"
                        r"|_{10,})$", re.IGNORECASE)
#: A closing line: what follows is the writer's name and signature, not the complaint.
_SIGN_OFF = re.compile(r"(?:(?:met )?(?:vriendelijke |hartelijke |beste )?groet(?:en)?|mvg|hoogachtend|"
                       r"(?:kind |best |warm )?regards|sincerely|yours (?:sincerely|faithfully)|cheers)[,.!]?",
                       re.IGNORECASE)
#: Outlook's header block of the mail being replied to: "Van: ..." followed by "Verzonden: ...".
_OUTLOOK_FROM = re.compile(r"^\*?(?:Van|From)\s*:\*?\s+\S", re.IGNORECASE)
_OUTLOOK_NEXT = re.compile(r"^\*?(?:Verzonden|Sent|Date|Datum|Aan|To|Onderwerp|Subject)\s*:", re.IGNORECASE)


def new_text(text: str) -> str:
    """The text the writer wrote now: without quoted earlier mail (``>`` lines, and whatever follows
    a reply header such as "Op ... schreef ...:" or Outlook's "Van: / Verzonden:" block) and without
    the signature after the ``-- `` line."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if _GMAIL_QUOTE_MARK in text:
        text = text.split(_GMAIL_QUOTE_MARK, 1)[0]
    lines = [line.rstrip() for line in text.split("\n")]
    kept: list[str] = []
    for number, line in enumerate(lines):
        stripped = line.strip()
        following = [l.strip() for l in lines[number + 1:number + 4]]
        if line in ("--", "-- ") or _SEPARATOR.match(stripped) or _REPLY_INTRO.match(stripped) \
                or _SIGN_OFF.fullmatch(stripped):
            break
        if re.match(r"^(?:Op|On)\b", stripped) and following and _REPLY_INTRO.match(f"{stripped} {following[0]}"):
            break
        if _OUTLOOK_FROM.match(stripped) and any(_OUTLOOK_NEXT.match(l) for l in following):
            break
        if stripped.startswith(">"):
            continue
        kept.append(line)
    return "\n".join(kept).strip()


# ------------------------------------------------------------------ labelled lines

_BY_LABEL = {label.lower(): field for field, labels in LABELS.items() for label in labels}
_LABEL_LINE = re.compile(
    r"^[ \t]*\**(" + "|".join(sorted((re.escape(label) for label in _BY_LABEL), key=len, reverse=True))
    + r")\**[ \t]*:[ \t]*(.*)$", re.IGNORECASE)


def labelled_fields(text: str) -> tuple[dict[str, str], str]:
    """The labelled lines of ``text`` (``{"phone": "06 12345678", ...}``; a value runs until the next
    label) and the text outside them. The first occurrence of a label counts; empty values do not."""
    fields: dict[str, str] = {}
    outside: list[str] = []
    current: str | None = None
    value: list[str] = []

    def close() -> None:
        if current is not None:
            joined = "\n".join(value).strip()
            if joined and current not in fields:
                fields[current] = joined

    for line in text.split("\n"):
        match = _LABEL_LINE.match(line)
        if match:
            close()
            current, value = _BY_LABEL[match.group(1).lower()], [match.group(2)]
        elif current is not None:
            value.append(line)
        else:
            outside.append(line)
    close()
    return fields, "\n".join(outside).strip()


def single_line(value: str) -> str:
    """A labelled value for a one-line field: its lines joined, white space folded."""
    return re.sub(r"\s+", " ", value).strip()
