"""Root conftest: registers the dpoclaims pytest plugins (options, resources, reports)."""

pytest_plugins = ["fixtures.options", "fixtures.resources", "fixtures.reporting"]
