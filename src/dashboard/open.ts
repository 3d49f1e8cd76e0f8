/**
 * `ktctl dashboard --open`: the desktop's browser on the dashboard's URL. `$BROWSER` first (the
 * convention xdg-open and Python's webbrowser follow: a command line, `%s` for the URL or the URL
 * appended), else the platform's opener: xdg-open (Linux, BSD), open (macOS), `start` (Windows).
 * The browser is started detached and left running; a missing opener is one sentence, not a failure
 * of the dashboard.
 */
import { spawn } from 'node:child_process';

export function browserCommand(url: string, env: NodeJS.ProcessEnv = process.env, platform: NodeJS.Platform = process.platform): [string, string[]] {
  const custom = env.BROWSER?.trim();
  if (custom) {
    const words = custom.split(/\s+/);
    const args = words.slice(1);
    if (args.some((a) => a.includes('%s'))) return [words[0]!, args.map((a) => a.replace('%s', url))];
    return [words[0]!, [...args, url]];
  }
  if (platform === 'darwin') return ['open', [url]];
  if (platform === 'win32') return ['cmd', ['/c', 'start', '""', url]];
  return ['xdg-open', [url]];
}

/** Starts the browser; resolves with a sentence when it could not be started, else undefined. */
export function openBrowser(url: string): Promise<string | undefined> {
  const [cmd, args] = browserCommand(url);
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { detached: true, stdio: 'ignore' });
    child.once('error', (error: NodeJS.ErrnoException) =>
      resolve(`could not start a browser (${cmd}: ${error.code === 'ENOENT' ? 'not found' : error.message}); open the URL above yourself, or set $BROWSER`),
    );
    child.once('spawn', () => {
      child.unref();
      resolve(undefined);
    });
  });
}
