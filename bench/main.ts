import { benchCapture } from './capture';
import { benchDelivery } from './delivery';
import { benchLive } from './live';

const only = process.argv[2];
console.log('# Webhook gateway benchmarks');
console.log(`node ${process.version}, ${new Date().toISOString()}`);
if (!only || only === 'capture') await benchCapture();
if (!only || only === 'delivery') await benchDelivery();
if (!only || only === 'live') await benchLive();
process.exit(0);
