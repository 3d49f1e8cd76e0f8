import { Cli, Command, Option, type BaseContext } from 'clipanion';
import { KtctlError } from '../../errors.js';
import { releaseEarlySignals } from '../early-signals.js';
import type { KubeFlags } from '../../kube/session.js';

/**
 * What every ktctl command shares: `--debug`, and turning a failure into one sentence on stderr
 * and a non-zero exit code (clipanion would otherwise print a stack trace as an "internal error").
 */
export abstract class KtctlCommand extends Command {
  debug = Option.Boolean('--debug,-d', false, { description: 'Print debug logs (each layer\'s events) on stderr' });

  /** The command's work; returns the exit code. */
  abstract run(): Promise<number>;

  async execute(): Promise<number> {
    // a command that does not serve until a signal ends by it as usual (ShadowCommand takes it over first)
    releaseEarlySignals();
    try {
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

/**
 * A flag that fails its validator (validators.ts) fails while clipanion parses, before any command
 * runs: this command stands in for the one that could not be made, and reports the failure as
 * `execute()` reports every other (`ktctl: <sentence>` on stderr, exit 1).
 */
class FlagErrorCommand extends Command {
  constructor(
    readonly error: KtctlError,
    readonly withStack: boolean,
  ) {
    super();
  }

  async execute(): Promise<number> {
    this.context.stderr.write(`ktctl: ${describeError(this.error, this.withStack)}\n`);
    return 1;
  }
}

/** clipanion's Cli, with a flag's validation failure reported in ktctl's words (see FlagErrorCommand). */
export class KtctlCli extends Cli {
  override process(input: string[], context: Partial<BaseContext> | void): Command<BaseContext> {
    try {
      return super.process(input, context ?? {});
    } catch (error) {
      if (!(error instanceof KtctlError)) throw error;
      return new FlagErrorCommand(error, input.includes('--debug') || input.includes('-d'));
    }
  }
}
