// Starts reqlite (an in-memory RethinkDB-protocol server) on loopback.
// reqlite's own CLI listens on every interface and adds 28015 to --driver-port,
// so this wrapper passes the host explicitly to net.Server#listen.
'use strict';
const net = require('net');

const host = process.env.RETHINKDB_BIND || '127.0.0.1';
const port = parseInt(process.env.RETHINKDB_PORT || '28015', 10);

const listen = net.Server.prototype.listen;
net.Server.prototype.listen = function (listenPort, callback) {
  return listen.call(this, listenPort, host, callback);
};

const Server = require('reqlite/lib/index.js');
const server = new Server({ 'driver-port': port, silent: true });
server._server.on('listening', () => {
  const address = server._server.address();
  console.log(`reqlite listening on ${address.address}:${address.port} (pid ${process.pid})`);
});
server._server.on('error', (error) => {
  console.error(`reqlite could not listen on ${host}:${port}: ${error.message}`);
  process.exit(1);
});
for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server._server.close(() => process.exit(0)));
}
