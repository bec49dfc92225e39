from tests.fixtures.upstream_server import upstream, upstream_server

__all__ = ["upstream", "upstream_server"]
