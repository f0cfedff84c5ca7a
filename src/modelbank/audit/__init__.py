"""The admin audit log (issue 16 part 3): every admin and service action that changes state
(prices, earnings rules, grants, refunds, payouts, keys, settings, webhooks, purchases
confirmed) as an append-only record of who, when, what, before and after, and the request id.

Services record their own actions (:func:`~modelbank.audit.service.record`, in the caller's
transaction, so a rolled-back action leaves no record); *who* comes from one place, the
:data:`~modelbank.audit.context.current_actor` context set by the API's caller dependency
(and by the CLI, the Stripe webhook and the jobs). Records are hash-chained like transfers
(:mod:`modelbank.chain`).
"""
