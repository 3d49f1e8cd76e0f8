import { Command, Option } from 'clipanion';
import { KtctlError } from '../../errors.js';
import { releaseEarlySignals } from '../early-signals.js';
import type { KubeFlags } from '../../kube/session.js';
import { describeSource, type Found } from './settings.js';

/**
 * What every ktctl command shares: `--debug`, and turning a failure into one sentence on stderr
 * and a non-zero exit code (clipanion would otherwise print a stack trace as an "internal error").
 */
export abstract class KtctlCommand extends Command {
  /** Flags not given come from the environment and the config file (settings.ts, applied by KtctlCli). */
  static configurable = true;

  /** Where the values not given on the command line came from (KtctlCli fills it). */
  settingSources: Array<{ flag: string; found: Found }> = [];

  debug = Option.Boolean('--debug,-d', false, { description: 'Print debug logs (each layer\'s events) on stderr' });

  /** The command's work; returns the exit code. */
  abstract run(): Promise<number>;

  /** Refusals of flags before anything runs (KT Connect's flags ktctl has no counterpart for). */
  protected checkFlags(): void {}

  /** Whether a flag was given on the command line (not taken from the environment or the config file). */
  protected typed(flag: string): boolean {
    return !this.settingSources.some((s) => s.flag === flag);
  }

  async execute(): Promise<number> {
    // a command that does not serve until a signal ends by it as usual (ShadowCommand takes it over first)
    releaseEarlySignals();
    for (const { flag, found } of this.settingSources) this.debugLog(`${flag} ${String(found.value)} from ${describeSource(found.source)}`);
    try {
      this.checkFlags();
      return await this.run();
    } catch (error) {
      this.context.stderr.write(`ktctl: ${describeError(error, this.debug)}\n`);
      return 1;
    }
  }

  /** A log line on stderr; debug lines only with --debug. */
  log(line: string): void {
    this.context.stderr.write(`${line}\n`);
  }

  debugLog(line: string): void {
    if (this.debug) this.context.stderr.write(`debug: ${line}\n`);
  }
}

/**
 * The kubeconfig flags of every command that talks to a cluster (KT Connect's global flags); the
 * subclasses that scope `-n` differently (check, clean, status) declare `namespace` again with their wording.
 */
export abstract class KubeCommand extends KtctlCommand {
  kubeconfig = Option.String('--kubeconfig,-c', { description: 'kubeconfig file(s) (default $KUBECONFIG, then ~/.kube/config)' });
  kubeContext = Option.String('--context', { description: 'kubeconfig context (default: the current one)' });
  namespace = Option.String('--namespace,-n', { description: 'namespace to work in: of the shadow and of the names you give (default: the context\'s, else default)' });

  protected kubeFlags(): KubeFlags {
    return { kubeconfig: this.kubeconfig, context: this.kubeContext, namespace: this.namespace };
  }
}

export function describeError(error: unknown, withStack = false): string {
  if (error instanceof KtctlError) {
    if (!withStack) return error.message;
    return `${error.message}\n${error.stack ?? ''}${error.cause ? `\ncaused by: ${String((error.cause as Error).stack ?? error.cause)}` : ''}`;
  }
  if (error instanceof Error) return withStack ? (error.stack ?? error.message) : error.message;
  return String(error);
}
