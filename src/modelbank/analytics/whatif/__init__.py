"""Price what-ifs (DESIGN §4, §8): usage priced under today's prices and under proposed ones
(a price sheet, tier markups, demand levels) with the charge path's own rate card and
earnings payer, never writing anything.

* :mod:`.proposal`: the proposal and the proposed price version of a model;
* :mod:`.simulate`: pricing a stream of events under two price sets, wallets simulated;
* :mod:`.recorded`: over the usage charged in a period (the admin API and page);
* :mod:`.trace`: over events not yet charged (``modelbank replay … --what-if``);
* :mod:`.report`: the answer, per model and in total.
"""

from modelbank.analytics.whatif.proposal import (
    InvalidWhatIf,
    Proposal,
    WhatIfTooLarge,
    parse_demand,
    parse_markups,
    proposed_price,
)
from modelbank.analytics.whatif.recorded import MAX_DAYS, MAX_EVENTS, recorded_what_if
from modelbank.analytics.whatif.report import ModelLine, WhatIfReport
from modelbank.analytics.whatif.simulate import Figures
from modelbank.analytics.whatif.trace import trace_what_if

__all__ = [
    "MAX_DAYS",
    "MAX_EVENTS",
    "Figures",
    "InvalidWhatIf",
    "ModelLine",
    "Proposal",
    "WhatIfReport",
    "WhatIfTooLarge",
    "parse_demand",
    "parse_markups",
    "proposed_price",
    "recorded_what_if",
    "trace_what_if",
]
