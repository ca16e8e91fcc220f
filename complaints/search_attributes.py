"""The search attributes operators filter complaints by. None holds personal data."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PHASE = SearchAttributeKey.for_keyword("ComplaintPhase")
ROUTE = SearchAttributeKey.for_keyword("ComplaintRoute")
PRODUCT = SearchAttributeKey.for_keyword("ComplaintProduct")
OUTCOME = SearchAttributeKey.for_keyword("ComplaintOutcome")
NEXT_DEADLINE = SearchAttributeKey.for_datetime("ComplaintNextDeadline")
#: Alerts whose cause still stands (e.g. acknowledgement-overdue until the letter has gone out).
OPEN_ALERTS = SearchAttributeKey.for_keyword_list("ComplaintOpenAlerts")
#: Minimum contents still missing (complaints that came by mail; set only on those).
INCOMPLETE = SearchAttributeKey.for_bool("ComplaintIncomplete")

ALL = (PHASE, ROUTE, PRODUCT, OUTCOME, NEXT_DEADLINE, OPEN_ALERTS, INCOMPLETE)
