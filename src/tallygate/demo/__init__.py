"""The built-in demo: a local OpenAI-compatible upstream that answers from the prompt and reports
true token usage (:mod:`tallygate.demo.upstream`), and the tokenizer that defines that truth
(:mod:`tallygate.demo.tokens`)."""

from tallygate.demo.upstream import DemoUpstream, UpstreamConfig, Usage, create_upstream_app

__all__ = ["DemoUpstream", "UpstreamConfig", "Usage", "create_upstream_app"]
