import pytest


def pytest_addoption(parser):
    parser.addoption("--vela", required=True, help="path to the vela CLI binary")


@pytest.fixture(scope="session")
def vela(request):
    return request.config.getoption("--vela")
