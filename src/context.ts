import type { Principal } from './auth/principal';
import type { Config } from './config';
import type { Db } from './db/database';
import type { StatusPublisher } from './delivery/status';
import type { Logger } from './logger';

/** What every service function gets: the database, the configuration, who is asking, and where live status goes. */
export interface ServiceContext {
  db: Db;
  config: Config;
  log: Logger;
  principal: Principal;
  status: StatusPublisher;
}
