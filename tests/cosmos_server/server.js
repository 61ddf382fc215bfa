#!/usr/bin/env node
/*
 * Starts the local Cosmos DB-compatible test server (@vercel/cosmosdb-server, HTTPS with the
 * package's self-signed certificate) with HTTP keep-alive and the change-feed extension.
 *
 *   node server.js --port 8081 [--host 127.0.0.1]
 *
 * Prints one line `cosmosdb-server ready https://HOST:PORT` on stdout once it accepts connections;
 * exits with status 1 and a message on stderr if it cannot listen. The stock CLI answers every request
 * with `Connection: close`, so each request would pay a TLS handshake; this keeps connections open.
 */
"use strict";

const accountModule = require("@vercel/cosmosdb-server/lib/account");
const { createHttpsServer } = require("@vercel/cosmosdb-server");
const changeFeed = require("./change-feed");

/** Start a server; resolves with {server, url} once it listens. */
function startServer({ host = "127.0.0.1", port = 0 } = {}) {
  changeFeed.installLsnStamping();
  // The stock request handler keeps its Account private; capture it when the server creates it
  // (lib/index.js instantiates `account.default` when it starts listening) so the extension can read it.
  let account = null;
  const StockAccount = accountModule.default;
  accountModule.default = class CapturedAccount extends StockAccount {
    constructor(...args) {
      super(...args);
      account = this;
    }
  };
  const server = createHttpsServer({ keepAlive: true });
  // Idle connections stay open longer than the client's pool keeps them, so the client never reuses
  // a socket the server is closing.
  server.keepAliveTimeout = 120000;
  server.headersTimeout = 125000;
  const stockHandlers = server.listeners("request");
  server.removeAllListeners("request");
  server.on("request", (req, res) => {
    if (changeFeed.handle(account, req, res)) return;
    for (const handler of stockHandlers) handler.call(server, req, res);
  });
  return new Promise((resolve, reject) => {
    server.once("error", err => {
      accountModule.default = StockAccount;
      reject(err);
    });
    server.listen(port, host, () => {
      // lib/index.js has created its Account in its own "listening" listener, which ran before this one.
      accountModule.default = StockAccount;
      server.removeAllListeners("error");
      const address = server.address();
      resolve({ server, url: `https://${host}:${address.port}` });
    });
  });
}

function parseArgs(argv) {
  const args = { host: "127.0.0.1", port: undefined };
  for (let i = 0; i < argv.length; i += 1) {
    if (argv[i] === "--port") args.port = Number.parseInt(argv[++i], 10);
    else if (argv[i] === "--host") args.host = argv[++i];
    else throw new Error(`unknown argument ${argv[i]}`);
  }
  if (!Number.isInteger(args.port) || args.port < 0 || args.port > 65535) {
    throw new Error("usage: node server.js --port PORT [--host HOST]");
  }
  return args;
}

if (require.main === module) {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`${err.message}\n`);
    process.exit(2);
  }
  startServer(args).then(
    ({ server, url }) => {
      process.stdout.write(`cosmosdb-server ready ${url}\n`);
      const stop = () => {
        server.close();
        server.closeAllConnections();
        process.exit(0);
      };
      process.on("SIGTERM", stop);
      process.on("SIGINT", stop);
    },
    err => {
      process.stderr.write(`cosmosdb-server cannot start: ${err.message}\n`);
      process.exit(1);
    },
  );
}

module.exports = { startServer };
