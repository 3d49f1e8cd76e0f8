#!/usr/bin/env node
// First: a Ctrl-C while the modules below load must not kill ktctl by the signal (early-signals.ts).
import { releaseEarlySignals } from './early-signals.js';
import { makeCli } from './commands.js';
import { tuneHeapForStreaming } from '../runtime/v8-heap.js';

tuneHeapForStreaming();

const cli = makeCli();
const code = await cli.run(process.argv.slice(2));
process.exitCode = code;
// (for clipanion's own commands, --help and --version, which take no signal over)
releaseEarlySignals();
