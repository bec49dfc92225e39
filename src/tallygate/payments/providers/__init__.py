"""Payment providers behind one small interface (``base.Provider``): start a checkout for an
order, and (where the provider supports it) ask for a refund. Confirmation never comes from
the return URL alone: it comes from the provider's event or from re-fetching its object."""
