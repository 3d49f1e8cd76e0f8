#!/usr/bin/env node
// First: a Ctrl-C while the modules below load must not kill ktctl by the signal (early-signals.ts).
import { releaseEarlySignals } from './early-signals.js';
import { Builtins } from 'clipanion';
import { BirdseyeCommand } from './birdseye.js';
import { CheckCommand } from './check.js';
import { CleanCommand } from './clean.js';
import { KtctlCli } from './common/command.js';
import { ConnectCommand } from './connect.js';
import { DashboardCommand } from './dashboard.js';
import { ExchangeCommand } from './exchange.js';
import { MeshCommand } from './mesh.js';
import { PreviewCommand } from './preview.js';
import { RecoverCommand } from './recover.js';
import { ForwardCommand } from './forward.js';
import { StatusCommand } from './status.js';
import { VERSION } from '../version.js';
import { tuneHeapForStreaming } from '../runtime/v8-heap.js';

tuneHeapForStreaming();

const cli = new KtctlCli({
  binaryLabel: 'ktctl',
  binaryName: 'ktctl',
  binaryVersion: VERSION,
  enableColors: false,
});
cli.register(Builtins.HelpCommand);
cli.register(Builtins.VersionCommand);
cli.register(ConnectCommand);
cli.register(ForwardCommand);
cli.register(CleanCommand);
cli.register(StatusCommand);
cli.register(CheckCommand);
cli.register(ExchangeCommand);
cli.register(MeshCommand);
cli.register(PreviewCommand);
cli.register(RecoverCommand);
cli.register(BirdseyeCommand);
cli.register(DashboardCommand);

const code = await cli.run(process.argv.slice(2));
process.exitCode = code;
// (for clipanion's own commands, --help and --version, which take no signal over)
releaseEarlySignals();
