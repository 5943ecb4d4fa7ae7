import type { Logger } from '../logger';

/** Per-request values the HTTP middleware sets for the handlers. */
export interface HttpEnv {
  Variables: {
    requestId: string;
    log: Logger;
  };
}
