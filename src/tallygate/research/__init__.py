"""The research assistant (issue 8): facts computed locally and exactly (data, facts, charts,
selfcheck), a multi-step workflow whose model calls are billed like any API request (runs,
billing, workflow) and the report (report), with its page, API and CLI surfaces."""
