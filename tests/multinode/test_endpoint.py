"""--rdzv-endpoint is checked before any node launches: torchrun would fail on it only after they all had."""

import pytest

from palsgd.core.errors import ConfigError
from palsgd.harness.machinery.pipeline import check_endpoint, check_nodes


@pytest.mark.parametrize("endpoint", ["localhost:29500", "10.0.0.1:1", "node-01.cluster:65535", "[::1]:29500"])
def test_valid_endpoints(endpoint):
    check_endpoint(endpoint)


@pytest.mark.parametrize("endpoint", ["host", ":", ":29500", "host:", "host:port", "host:0", "host:65536",
                                      "::1:29500", "my host:29500", "http://host:29500", "host:-1"])
def test_bad_endpoints_are_named(endpoint):
    with pytest.raises(ConfigError, match="must be HOST:PORT") as err:
        check_nodes(2, 0, endpoint)
    assert "--rdzv-endpoint" in str(err.value) and endpoint in str(err.value)
