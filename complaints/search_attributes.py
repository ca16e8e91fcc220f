"""The search attributes operators filter complaints by. None holds personal data."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

PHASE = SearchAttributeKey.for_keyword("ComplaintPhase")
ROUTE = SearchAttributeKey.for_keyword("ComplaintRoute")
PRODUCT = SearchAttributeKey.for_keyword("ComplaintProduct")
OUTCOME = SearchAttributeKey.for_keyword("ComplaintOutcome")
NEXT_DEADLINE = SearchAttributeKey.for_datetime("ComplaintNextDeadline")

ALL = (PHASE, ROUTE, PRODUCT, OUTCOME, NEXT_DEADLINE)
