"""The builder's command line is one module per command (``add_arguments``, ``run``) under simswap_build/cli/.
Module and function sizes and import cycles of the whole code base are checked by tests/test_layout.py."""

from simswap_build import cli as build_cli


def test_each_command_is_one_module_with_add_arguments_and_run():
    parser = build_cli.build_parser()
    commands = parser._subparsers._group_actions[0].choices
    assert list(commands) == [command.NAME for command in build_cli.COMMANDS]
    for command in build_cli.COMMANDS:
        assert command.__name__ == f"simswap_build.cli.{command.NAME.replace('-', '_')}"
        assert callable(command.add_arguments) and callable(command.run)
        assert commands[command.NAME].description == command.DESCRIPTION
