-- A message's status now follows from its deliveries' when read: it always did, so nothing is lost.
ALTER TABLE "webhook_gateway"."messages" DROP COLUMN "status";