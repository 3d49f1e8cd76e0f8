/** The TUN device, its addresses and routes, and crash recovery. */
export * from './device.js';
export * from './cidr.js';
export * from './ip.js';
export * from './device-record.js';
