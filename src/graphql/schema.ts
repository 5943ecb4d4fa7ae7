import { builder } from './builder';
import '../webhooks/graphql';
import '../events/graphql';
import '../tables/graphql';
import '../messages/graphql';
import '../delivery/graphql';

export const schema = builder.toSchema({ sortSchema: false });
