from pybuild.cli.main import run

run()
