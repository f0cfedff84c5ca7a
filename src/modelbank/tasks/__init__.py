"""After-commit tasks (issue 13): work a transaction asks for but must not do itself.

A change writes a :class:`~modelbank.tasks.models.Task` row in its own transaction
(:func:`~modelbank.tasks.service.enqueue`); ``modelbank jobs run`` claims due rows after the
commit and runs the handler of their ``kind`` (an auto top-up purchase, an email), retrying
with backoff like webhook deliveries. A rolled-back change leaves no task behind.
"""
