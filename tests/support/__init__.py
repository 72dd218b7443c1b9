"""What the tests share: factories of simulators, clocks and clients, the fixtures built on them
(registered once, from the root conftest), and the helpers tests import."""
