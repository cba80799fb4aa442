import pytest

from palsgd.core.errors import ConfigError
from palsgd.harness.machinery.netem import preflight


@pytest.fixture(scope="session")
def netns_ok():
    """Skip unless this machine can emulate a network with a delay (root, ip, tc, the delay program)."""
    try:
        preflight(need_delay_program=True)
    except ConfigError as err:
        pytest.skip(str(err))
