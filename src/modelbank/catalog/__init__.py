"""The model catalog's pure parts: provider costs, price-sheet import and tier detection.

* :mod:`modelbank.catalog.costs`: :class:`~modelbank.catalog.costs.ProviderCost`, what a
  provider charges us for one model. Every rate is a ``Decimal`` in µUSD (per 1M tokens, per
  request, per image or per second); never a float.
* :mod:`modelbank.catalog.genai`: costs from the embedded ``genai-prices`` snapshot (the
  default source, so a fresh install has real prices).
* :mod:`modelbank.catalog.pricesheet`: costs from a LiteLLM
  ``model_prices_and_context_window.json`` sheet.
* :mod:`modelbank.catalog.tiers`: the markup tier guessed from a model's name and mode
  (DESIGN §4); operators can override it.

Invariants: every rate is ≥ 0 and exact (parsed with :func:`modelbank.money.parse_decimal`,
scaled by a power of ten, never rounded); importers never raise for one bad entry, they list
it in ``CostImport.skipped`` with a reason. Nothing here touches the database.
"""
