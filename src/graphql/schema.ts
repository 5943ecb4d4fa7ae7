import { builder } from './builder';
import '../webhooks/graphql';

export const schema = builder.toSchema({ sortSchema: false });
