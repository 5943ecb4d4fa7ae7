import { benchCapture } from './capture';
import { benchCompare } from './compare';
import { benchDelivery } from './delivery';
import { benchLive } from './live';

const only = process.argv[2];
console.log('# Webhook gateway benchmarks');
console.log(`node ${process.version}, ${new Date().toISOString()}`);
if (!only || only === 'capture') await benchCapture();
if (!only || only === 'delivery') await benchDelivery();
if (!only || only === 'live') await benchLive();
// Not part of the full run: a development tool, for a change too small to show in two separate runs.
if (only === 'compare') await benchCompare(process.argv[3]);
process.exit(0);
