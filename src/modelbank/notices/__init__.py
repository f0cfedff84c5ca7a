"""Email notices (issue 13): low balance, auto top-up done or failed, payout completed,
subscription renewal failed.

Any domain calls :func:`~modelbank.notices.service.notify` in its own transaction; it writes
an ``email`` task (:mod:`modelbank.tasks`) only for users who gave an address and left
notices on. ``modelbank jobs run`` renders the template ``web/templates/email/<kind>.txt``
and sends it with the standard library's ``smtplib`` after the commit, with retries
(:mod:`modelbank.notices.sender`). Without ``MODELBANK_SMTP_HOST`` nothing is sent.
"""
