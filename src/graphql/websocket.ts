import type { IncomingMessage, Server } from 'node:http';
import type { Socket } from 'node:net';
import { GraphQLError, type ExecutionArgs } from 'graphql';
import { CloseCode } from 'graphql-ws';
import { useServer } from 'graphql-ws/use/ws';
import { WebSocketServer, type WebSocket } from 'ws';
import type { Principal } from '../auth/principal';
import type { ApiRateLimiter } from '../auth/rateLimit';
import { authenticateBearer } from '../auth/tokens';
import type { Db } from '../db/database';
import { AppError, RateLimitedError } from '../errors';
import type { Logger } from '../logger';
import type { createGraphQLHandler } from './handler';
import { appErrorToGraphQL, withContractCodes } from './errors';

/** Operations one connection may run at once. */
export const MAX_OPERATIONS_PER_CONNECTION = 100;

type ConnectionExtra = {
  socket: WebSocket;
  request: IncomingMessage;
  authorization?: string;
  principal?: Principal;
  recheck?: NodeJS.Timeout;
};

type Yoga = ReturnType<typeof createGraphQLHandler>;

interface Enveloped {
  execute: (args: ExecutionArgs) => unknown;
  subscribe: (args: ExecutionArgs) => unknown;
}

/** Bytes a connection may have waiting to be written before its subscriptions wait for the client. */
const SEND_HIGH_WATER_BYTES = 16 * 1024;

/**
 * graphql-ws waits for each message to be written before it takes a subscription's next one,
 * which costs one system call per message. Here a send counts as done at once while the
 * connection's backlog is under SEND_HIGH_WATER_BYTES, and the messages of one tick leave in
 * one write; a client that does not read still makes its subscriptions wait (bounded memory).
 */
function batchSends(socket: WebSocket): void {
  const send = socket.send.bind(socket) as (data: string, callback: (error?: Error) => void) => void;
  const transport = (socket as unknown as { _socket: Socket })._socket;
  let corked = false;
  socket.send = ((data: string, callback: (error?: Error) => void) => {
    if (!corked) {
      corked = true;
      transport.cork();
      process.nextTick(() => {
        corked = false;
        transport.uncork();
      });
    }
    if (socket.bufferedAmount < SEND_HIGH_WATER_BYTES) {
      send(data, () => {});
      callback();
    } else {
      send(data, callback);
    }
  }) as WebSocket['send'];
}

/** `Authorization` as the contract says, also in the spellings clients commonly send. */
function authorizationOf(params: Readonly<Record<string, unknown>> | undefined): string | undefined {
  const headers = params?.headers as Record<string, unknown> | undefined;
  const value = params?.Authorization ?? params?.authorization ?? headers?.Authorization ?? headers?.authorization;
  return typeof value === 'string' ? value : undefined;
}

/** graphql-ws's code for "too many": its clients give up instead of reconnecting at once. */
const TOO_MANY_REQUESTS_CLOSE_CODE = CloseCode.TooManyInitialisationRequests;

const internalError = () => [new GraphQLError('Internal error', { extensions: { code: 'InternalError' } })];

export interface GraphQLWebSocketDependencies {
  db: Db;
  log: Logger;
  maxPayload: number;
  rateLimiter: ApiRateLimiter;
  /** WebSocket connections one client profile may hold open to this process. */
  maxConnectionsPerClient: number;
  /** How often an open connection's token is checked again. */
  recheckMs: number;
}

/**
 * GraphQL over WebSocket (the graphql-ws protocol) on the HTTP server's `/graphql`: the same
 * schema, limits and error codes as HTTP. The bearer token comes in `connectionParams`; without
 * a valid one the socket closes with 4401 and the reason. It is checked again for every
 * operation and every `recheckMs`, and the socket closes the same way when it expires or is
 * revoked. Connections and operations count against the client's API rate limit, and a client
 * holds at most `maxConnectionsPerClient` connections here (over either: 4429 with the reason).
 */
export function attachGraphQLWebSocket(server: Server, yoga: Yoga, deps: GraphQLWebSocketDependencies) {
  const sockets = new WebSocketServer({ server, path: '/graphql', maxPayload: deps.maxPayload });
  sockets.on('connection', batchSends); // before graphql-ws's own listener, so that it sends through it
  const connectionsOf = new Map<string, number>();

  /** Counts a connection or operation against the client's API rate limit: the refusal, if over it. */
  async function overRateLimit(principal: Principal): Promise<RateLimitedError | undefined> {
    try {
      await deps.rateLimiter.admit(principal);
      return undefined;
    } catch (error) {
      if (error instanceof RateLimitedError) return error;
      throw error;
    }
  }

  /** Counts the connection for its client, or closes it (4429) when the client is over a limit. */
  async function admitConnection(extra: ConnectionExtra, principal: Principal): Promise<boolean> {
    const { socket } = extra;
    const refuse = (reason: string) => {
      socket.close(TOO_MANY_REQUESTS_CLOSE_CODE, `TooManyRequests: ${reason}`);
      return false;
    };
    const refused = await overRateLimit(principal);
    if (refused) return refuse(refused.message);
    const open = connectionsOf.get(principal.clientId) ?? 0;
    if (open >= deps.maxConnectionsPerClient) {
      return refuse(`this client has ${open} connections open here (WS_MAX_CONNECTIONS_PER_CLIENT)`);
    }
    if (socket.readyState !== socket.OPEN) return false;
    connectionsOf.set(principal.clientId, open + 1);
    socket.once('close', () => {
      const left = (connectionsOf.get(principal.clientId) ?? 1) - 1;
      if (left > 0) connectionsOf.set(principal.clientId, left);
      else connectionsOf.delete(principal.clientId);
    });
    return true;
  }

  /** The caller behind the connection's token, or the socket closed with the reason and undefined. */
  async function authenticate(extra: ConnectionExtra): Promise<Principal | undefined> {
    const { socket } = extra;
    try {
      const principal = await authenticateBearer(deps.db, extra.authorization);
      if (socket.readyState !== socket.OPEN) return undefined; // gone while we asked
      extra.principal = principal;
      return principal;
    } catch (error) {
      if (error instanceof AppError) {
        const expired = extra.principal?.tokenExpiresAt && extra.principal.tokenExpiresAt.getTime() <= Date.now();
        socket.close(CloseCode.Unauthorized, expired ? 'Unauthorized: the access token expired' : `Unauthorized: ${error.message}`);
      } else {
        deps.log.error({ err: error }, 'authenticating a WebSocket connection failed');
        socket.close(CloseCode.InternalServerError, 'Internal error');
      }
      return undefined;
    }
  }

  /** Checks the token again every `recheckMs`, and when it expires. */
  function scheduleCheck(extra: ConnectionExtra): void {
    const expiresIn = (extra.principal?.tokenExpiresAt?.getTime() ?? Infinity) - Date.now();
    extra.recheck = setTimeout(
      () => void authenticate(extra).then((principal) => principal && scheduleCheck(extra)),
      Math.max(0, Math.min(deps.recheckMs, expiresIn)),
    );
  }

  const graphqlWs = useServer<Record<string, unknown>, ConnectionExtra>(
    {
      isProd: true, // close reasons never carry internal details
      execute: (args) => (args.rootValue as Enveloped).execute(args) as never,
      subscribe: (args) => (args.rootValue as Enveloped).subscribe(args) as never,
      onConnect: async (ctx) => {
        const { extra } = ctx;
        extra.authorization = authorizationOf(ctx.connectionParams);
        extra.socket.once('close', () => clearTimeout(extra.recheck));
        const principal = await authenticate(extra);
        if (!principal || !(await admitConnection(extra, principal))) return false;
        scheduleCheck(extra);
        return true;
      },
      onSubscribe: async (ctx, _id, payload) => {
        if (Object.keys(ctx.subscriptions).length > MAX_OPERATIONS_PER_CONNECTION) {
          return [
            new GraphQLError(`A connection runs at most ${MAX_OPERATIONS_PER_CONNECTION} operations at once`, {
              extensions: { code: 'TooManyRequests' },
            }),
          ];
        }
        const principal = await authenticate(ctx.extra);
        if (!principal) return internalError(); // the socket is closing with the reason
        const refused = await overRateLimit(principal);
        if (refused) return [appErrorToGraphQL(refused)];
        const log = deps.log.child({ connection: ctx.extra.request.headers['sec-websocket-key'] });
        const enveloped = yoga.getEnveloped({ log, principal, params: payload, request: undefined as never });
        try {
          const document = enveloped.parse(payload.query);
          const errors = enveloped.validate(enveloped.schema, document);
          if (errors.length > 0) return withContractCodes(errors);
          return {
            schema: enveloped.schema,
            document,
            operationName: payload.operationName,
            variableValues: payload.variables,
            contextValue: await enveloped.contextFactory(),
            rootValue: { execute: enveloped.execute, subscribe: enveloped.subscribe } satisfies Enveloped,
          };
        } catch (error) {
          if (error instanceof GraphQLError) return withContractCodes([error]);
          log.error({ err: error }, 'preparing a WebSocket operation failed');
          return internalError();
        }
      },
      onNext: (_ctx, _id, _payload, _args, result) => {
        if (result.errors) withContractCodes(result.errors);
      },
    },
    sockets,
  );
  return {
    /**
     * Closes every connection (1001, going away) and stops taking new ones; a client that does
     * not answer the close within a second is cut off, so that shutdown never waits on one.
     */
    async close() {
      const cutOff = setTimeout(() => {
        for (const client of sockets.clients) client.terminate();
      }, 1000);
      try {
        await graphqlWs.dispose();
      } finally {
        clearTimeout(cutOff);
      }
    },
  };
}
