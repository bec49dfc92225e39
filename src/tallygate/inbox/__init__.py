"""External events (provider webhooks): verified at the edge, stored raw under
UNIQUE(source, external_id), processed, stamped ``handled_at``. A redelivery of a handled event
is answered at once and changes nothing; an unhandled one is retried by the sweeper."""
