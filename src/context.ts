import type { Principal } from './auth/principal';
import type { Config } from './config';
import type { Db } from './db/database';
import type { Logger } from './logger';

/** What every service function gets: the database, the configuration and who is asking. */
export interface ServiceContext {
  db: Db;
  config: Config;
  log: Logger;
  principal: Principal;
}
