"""The yearly analysis's report for people: a text table (``admin.py analyse``, the mail's plain
text) and HTML (the director's mail), in English or Dutch.

The report itself is the JSON of the contract (README, "The yearly analysis"); this module
only lays it out. The terms its labels state come from complaints/terms.py.
"""

from __future__ import annotations

from html import escape
from typing import Any, Literal, Mapping

from complaints.terms import ACKNOWLEDGE_WITHIN, CONSEQUENCES_WITHIN, JUDGE_MEASURE_AFTER, MEASURE_WINDOW

Lang = Literal["en", "nl"]

LABELS: dict[str, dict[Lang, str]] = {
    "title": {"en": "Complaints {year}: the yearly analysis", "nl": "Klachten {year}: de jaaranalyse"},
    "received": {"en": "Received", "nl": "Ontvangen"},
    "total": {"en": "complaints received", "nl": "klachten ontvangen"},
    "by_route": {"en": "By route (as submitted)", "nl": "Naar route (bij indiening)"},
    "by_channel": {"en": "By channel", "nl": "Naar kanaal"},
    "by_product": {"en": "By product", "nl": "Naar product"},
    "by_outcome": {"en": "By outcome (open: not closed at the time of the run)",
                   "nl": "Naar uitkomst (open: niet afgesloten bij het opstellen)"},
    "product": {"en": "product", "nl": "product"},
    "procedure": {"en": "The procedure", "nl": "De procedure"},
    "escalated_to_formal": {"en": "escalated to the formal procedure", "nl": "geëscaleerd naar formeel"},
    "acknowledged_on_time": {"en": f"acknowledged within {ACKNOWLEDGE_WITHIN.en()}",
                             "nl": f"ontvangst binnen {ACKNOWLEDGE_WITHIN.nl()} bevestigd"},
    "decided_within_term": {"en": "decided within the term", "nl": "binnen de termijn besloten"},
    "extended": {"en": "term extended", "nl": "termijn verlengd"},
    "mediated": {"en": "went to mediation", "nl": "naar bemiddeling"},
    "consequences_on_time": {"en": f"consequences picked up within {CONSEQUENCES_WITHIN.en()}",
                             "nl": f"consequenties binnen {CONSEQUENCES_WITHIN.nl()} opgepakt"},
    "median_days_to_close": {"en": "median days to close", "nl": "mediaan dagen tot afsluiting"},
    "of": {"en": "of", "nl": "van"},
    "measures": {"en": f"Measures: complaints about the product in the {MEASURE_WINDOW.en()} before and after",
                 "nl": f"Maatregelen: klachten over het product in de {MEASURE_WINDOW.nl()} ervoor en erna"},
    "no_measures": {"en": "no measures recorded this year", "nl": "geen maatregelen vastgelegd dit jaar"},
    "recorded_on": {"en": "recorded", "nl": "vastgelegd"},
    "before": {"en": "before", "nl": "ervoor"},
    "after": {"en": "after", "nl": "erna"},
    "effective": {"en": "effective", "nl": "effectief"},
    "measure": {"en": "measure", "nl": "maatregel"},
    "yes": {"en": "yes", "nl": "ja"},
    "no": {"en": "no", "nl": "nee"},
    "too_early": {"en": f"too early to judge (fewer than {JUDGE_MEASURE_AFTER.en()} since the measure)",
                  "nl": f"te vroeg om te beoordelen (minder dan {JUDGE_MEASURE_AFTER.nl()} sinds de maatregel)"},
    "none": {"en": "none", "nl": "geen"},
}


def _t(key: str, lang: Lang) -> str:
    return LABELS[key][lang]


def _ratio(value: dict[str, int], lang: Lang) -> str:
    count, of = value["count"], value["of"]
    share = f" ({round(100 * count / of)}%)" if of else ""
    return f"{count} {_t('of', lang)} {of}{share}"


def _days(value: float | None, lang: Lang) -> str:
    if value is None:
        return "-"
    return f"{value:.1f}".replace(".", ",") if lang == "nl" else f"{value:.1f}"


def _effective(measure: dict[str, Any], lang: Lang) -> str:
    effective = measure["effective"]
    return _t("too_early", lang) if effective is None else _t("yes" if effective else "no", lang)


def _sections(report: dict[str, Any], lang: Lang, names: Mapping[str, str]) -> list[tuple[str, list[tuple[str, str]]]]:
    """(heading, [(label, value), ...]) for everything but the measures."""
    sections = [(_t("received", lang), [(_t("total", lang), str(report["total"]))])]
    for key in ("by_route", "by_channel", "by_product", "by_outcome"):
        counts = sorted(report[key].items(), key=lambda kv: (-kv[1], kv[0]))
        label = (lambda code: names.get(code, code)) if key == "by_product" else str
        sections.append((_t(key, lang), [(label(name), str(n)) for name, n in counts]
                         or [(_t("none", lang), "")]))
    procedure = [(_t(k, lang), _ratio(report[k], lang)) if isinstance(report[k], dict) else
                 (_t(k, lang), str(report[k]))
                 for k in ("acknowledged_on_time", "decided_within_term", "consequences_on_time",
                           "escalated_to_formal", "extended", "mediated")]
    procedure.append((_t("median_days_to_close", lang), _days(report["median_days_to_close"], lang)))
    return sections + [(_t("procedure", lang), procedure)]


def render_text(report: dict[str, Any], lang: Lang = "en", names: Mapping[str, str] | None = None) -> str:
    """The report as an aligned text table; ``names``: the catalogue's name of each product code."""
    names = names or {}
    title = _t("title", lang).format(year=report["year"])
    lines = [title, "=" * len(title)]
    sections = _sections(report, lang, names)
    width = max(len(label) for _, rows in sections for label, _ in rows)
    value_width = max(len(value) for _, rows in sections for _, value in rows)
    for heading, rows in sections:
        lines += ["", heading] + [f"  {label:<{width}}  {value:>{value_width}}".rstrip() for label, value in rows]
    lines += ["", _t("measures", lang)]
    measures = report["measures"]
    if not measures:
        lines.append(f"  {_t('no_measures', lang)}")
    else:
        product_width = max(len(_t("product", lang)), *(len(names.get(m["product"], m["product"])) for m in measures))
        head = (f"  {_t('recorded_on', lang):<10}  {_t('product', lang):<{product_width}}  "
                f"{_t('before', lang):>6}  {_t('after', lang):>6}  {_t('effective', lang)}")
        lines.append(head.upper())
        for m in measures:
            product = names.get(m["product"], m["product"])
            lines.append(f"  {m['recorded_on']:<10}  {product:<{product_width}}  {m['complaints_before']:>6}  "
                         f"{m['complaints_after']:>6}  {_effective(m, lang)}")
            lines.append(f"  {'':<10}  {_t('measure', lang)}: {m['measure']}")
    return "\n".join(lines)


_TABLE = 'style="border-collapse:collapse;margin:0 0 1.2em 0"'
_TD = 'style="padding:3px 12px 3px 0;border-bottom:1px solid #eee;vertical-align:top"'
_NUM = 'style="padding:3px 0 3px 12px;border-bottom:1px solid #eee;text-align:right;vertical-align:top"'


def render_html(report: dict[str, Any], chart_cid: str | None = None, footer: str = "",
                lang: Lang = "nl", names: Mapping[str, str] | None = None) -> str:
    """The report as an HTML page; ``chart_cid`` shows the chart (a ``cid:`` image) under the title;
    ``names``: the catalogue's name of each product code."""
    names = names or {}
    title = escape(_t("title", lang).format(year=report["year"]))
    parts = [f'<!DOCTYPE html><html lang="{lang}"><head><meta charset="utf-8"><title>{title}</title></head>',
             '<body style="font-family:Arial,Helvetica,sans-serif;font-size:14px;color:#222">',
             f"<h1 style=\"font-size:20px\">{title}</h1>"]
    if chart_cid:
        parts.append(f'<p><img src="cid:{escape(chart_cid)}" alt="{escape(title)}" width="880"></p>')
    for heading, rows in _sections(report, lang, names):
        parts.append(f'<h2 style="font-size:16px">{escape(heading)}</h2><table {_TABLE}>')
        parts += [f"<tr><td {_TD}>{escape(label)}</td><td {_NUM}>{escape(value)}</td></tr>" for label, value in rows]
        parts.append("</table>")
    parts.append(f'<h2 style="font-size:16px">{escape(_t("measures", lang))}</h2>')
    if not report["measures"]:
        parts.append(f"<p>{escape(_t('no_measures', lang))}</p>")
    else:
        head = "".join(f"<th {_TD if k in ('recorded_on', 'product', 'measure', 'effective') else _NUM}>"
                       f"{escape(_t(k, lang))}</th>"
                       for k in ("recorded_on", "product", "measure", "before", "after", "effective"))
        parts.append(f"<table {_TABLE}><tr>{head}</tr>")
        for m in report["measures"]:
            parts.append(
                f"<tr><td {_TD}>{escape(m['recorded_on'])}</td>"
                f"<td {_TD}>{escape(names.get(m['product'], m['product']))}</td>"
                f"<td {_TD}>{escape(m['measure'])}</td><td {_NUM}>{m['complaints_before']}</td>"
                f"<td {_NUM}>{m['complaints_after']}</td><td {_TD}>{escape(_effective(m, lang))}</td></tr>")
        parts.append("</table>")
    if footer:
        parts.append(f'<p style="color:#777;font-size:12px">{escape(footer)}</p>')
    parts.append("</body></html>")
    return "\n".join(parts)
