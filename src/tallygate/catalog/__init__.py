"""The model catalog: public models, one offer per route type, immutable price versions, the
price-list sync, and the user-facing marketplace."""
