/** Every ktctl command on one clipanion Cli (main.ts runs it; tests parse with it in-process). */
import { Builtins } from 'clipanion';
import { BirdseyeCommand } from './birdseye.js';
import { CheckCommand } from './check.js';
import { CleanCommand } from './clean.js';
import { KtctlCli } from './common/cli.js';
import { CompleteCommand, CompletionCommand } from './completion.js';
import { CONFIG_COMMANDS } from './config.js';
import { ConnectCommand } from './connect.js';
import { DashboardCommand } from './dashboard.js';
import { ExchangeCommand } from './exchange.js';
import { ForwardCommand } from './forward.js';
import { MeshCommand } from './mesh.js';
import { PreviewCommand } from './preview.js';
import { RecoverCommand } from './recover.js';
import { StatusCommand } from './status.js';
import { VERSION } from '../version.js';

export function makeCli(): KtctlCli {
  const cli = new KtctlCli({
    binaryLabel: 'ktctl',
    binaryName: 'ktctl',
    binaryVersion: VERSION,
    enableColors: false,
  });
  cli.register(Builtins.HelpCommand);
  cli.register(Builtins.VersionCommand);
  // the order of `ktctl --help`'s groups and of the commands in each
  cli.register(ConnectCommand);
  cli.register(ForwardCommand);
  cli.register(ExchangeCommand);
  cli.register(MeshCommand);
  cli.register(PreviewCommand);
  cli.register(CleanCommand);
  cli.register(RecoverCommand);
  cli.register(StatusCommand);
  cli.register(BirdseyeCommand);
  cli.register(CheckCommand);
  cli.register(DashboardCommand);
  for (const c of CONFIG_COMMANDS) cli.register(c);
  cli.register(CompletionCommand);
  cli.register(CompleteCommand);
  return cli;
}
