import { benchCapture } from './capture';

console.log('# Webhook gateway benchmarks');
console.log(`node ${process.version}, ${new Date().toISOString()}`);
await benchCapture();
process.exit(0);
