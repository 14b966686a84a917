import { MemoryScheduleStore } from './memory.ts';
import { scheduleConformance } from './schedules.case.ts';

scheduleConformance('memory', () => Promise.resolve(new MemoryScheduleStore()));
