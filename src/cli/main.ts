#!/usr/bin/env node
import { Builtins, Cli } from 'clipanion';
import { CheckCommand } from './check.js';
import { CleanCommand } from './clean.js';
import { ConnectCommand } from './connect.js';
import { StatusCommand } from './status.js';
import { VERSION } from './version.js';

const cli = new Cli({
  binaryLabel: 'ktctl',
  binaryName: 'ktctl',
  binaryVersion: VERSION,
  enableColors: false,
});
cli.register(Builtins.HelpCommand);
cli.register(Builtins.VersionCommand);
cli.register(ConnectCommand);
cli.register(CleanCommand);
cli.register(StatusCommand);
cli.register(CheckCommand);

const code = await cli.run(process.argv.slice(2));
process.exitCode = code;
