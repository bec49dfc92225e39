"""Promotional credit: campaigns, redeem codes, claims, starter credit (``claims``), the
failed-claim limit (``throttle``) and per-campaign reports. Adjustments live in
``tallygate.adjustments``."""
