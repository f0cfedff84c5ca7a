"""The double-entry credit ledger (DESIGN §3), modelled on TigerBeetle's accounts and transfers.

Invariants kept here and checked by :mod:`modelbank.ledger.invariants`:

* every transfer moves a positive amount of µcr from one account to a different one, and is
  never updated or deleted (corrections are reversing transfers);
* Σ debits_posted = Σ credits_posted over all accounts (and the same for pending);
* each account's cached totals equal the sums of its transfers;
* an account flagged ``debits_must_not_exceed_credits`` never has
  debits_posted + debits_pending > credits_posted;
* a hold (pending transfer) is resolved at most once: posted for ≤ the held amount, or voided.

Only :mod:`modelbank.ledger.service` writes to ``accounts`` and ``transfers``.
"""
