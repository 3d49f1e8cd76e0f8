export { ProxyServer, DEFAULT_PROXY_HOST, DEFAULT_PROXY_PORT, PROXY_BOUNDS } from './server.js';
export type { ProxyServerOptions, ProxyStats } from './server.js';
export type { ProxyEvent, ProxyProtocol } from './context.js';
export { describeDialFailure } from './context.js';
export { REPLY_FOR_FAILURE } from './socks5.js';
