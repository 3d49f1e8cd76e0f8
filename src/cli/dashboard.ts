import { Command, Option } from 'clipanion';
import { ListenError } from '../errors.js';
import { useProfile } from '../kube/permissions.js';
import { untilSignal } from '../connect/signals.js';
import { KubeCommand } from './common/command.js';
import { port } from './common/validators.js';

export class DashboardCommand extends KubeCommand {
  static override paths = [['dashboard']];

  static override usage = Command.Usage({
    category: 'Clean up, inspect and configure',
    description: 'a local web page: who holds which service, and what this machine\'s sessions do, live',
    details: `
      Serves one page on 127.0.0.1 (a free port unless \`--port\`) and prints its URL, with a random token, on a
      line of its own. The page shows what \`ktctl birdseye\` shows, and this machine's sessions with their live
      figures and a throughput chart, updated as they change (server-sent events). Two actions, each after a
      confirmation: \`recover\` a service whose holder is stale, and \`clean\` stale objects.

      Requests without the token, or with a Host other than 127.0.0.1:PORT or localhost:PORT, get 403; there are
      no CORS headers, and actions need a POST with the token. Works offline: nothing is loaded from elsewhere.
      Ctrl-C stops it.
    `,
    examples: [
      ['Open the dashboard in the browser', '$0 dashboard --open'],
      ['Every namespace, on a fixed port', '$0 dashboard -A --port 8377'],
    ],
  });

  port = Option.String('--port', '0', { description: 'port on 127.0.0.1 (default: a free one)', validator: port('--port') });
  open = Option.Boolean('--open', false, { description: 'open the page in the desktop\'s browser ($BROWSER, else xdg-open/open)' });
  allNamespaces = Option.Boolean('--all-namespaces,-A', false, { description: 'every namespace you may list' });

  async run(): Promise<number> {
    useProfile({ command: 'dashboard', flags: {} }, (l) => this.debugLog(l));
    const [{ openKube }, { startDashboard }, { openBrowser }] = await Promise.all([
      import('../kube/session.js'),
      import('../dashboard/server.js'),
      import('../dashboard/open.js'),
    ]);
    const stop = untilSignal((l) => this.log(l), 'stopping');
    try {
      const kube = openKube(this.kubeFlags());
      let dashboard: Awaited<ReturnType<typeof startDashboard>>;
      try {
        dashboard = await startDashboard({ kube, namespace: this.allNamespaces ? undefined : kube.namespace, port: this.port, debug: (l) => this.debugLog(l) });
      } catch (error) {
        const code = (error as NodeJS.ErrnoException).code;
        if (code === 'EADDRINUSE') throw new ListenError(`port ${this.port} on 127.0.0.1 is in use: pick another with --port, or leave --port out for a free one`, { cause: error });
        if (code === 'EACCES') throw new ListenError(`port ${this.port} on 127.0.0.1 needs privileges: pick one above 1023, or leave --port out`, { cause: error });
        throw error;
      }
      this.context.stdout.write(`${dashboard.url}\n`);
      this.log(`ktctl dashboard on 127.0.0.1:${dashboard.port}; the URL above carries its token; Ctrl-C stops it`);
      if (this.open) {
        const failed = await openBrowser(dashboard.url);
        if (failed) this.log(failed);
      }
      await stop.signal;
      await dashboard.close();
      return 0;
    } finally {
      stop.release();
    }
  }
}
