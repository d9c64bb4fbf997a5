"""The nonlocal-tf model zoo: catalogue, recipes and command-line scripts."""
