/** The task types this build knows. Register your own here (see README, "Your own logic"). */
import { analystTaskType, coordinatorTaskType, researchTaskType, seedReportTemplate, writerTaskType } from './report-workflow.ts';
import { TaskRegistry } from '../common/registry.ts';
import { agentTaskType } from './agent-logic.ts';
import { multiAgentReportTaskType, optionsAnalysisTaskType, stockScreeningTaskType } from './seed-types.ts';

export function defaultRegistry(): TaskRegistry {
  return new TaskRegistry()
    .register(agentTaskType)
    .register(multiAgentReportTaskType)
    .register(optionsAnalysisTaskType)
    .register(stockScreeningTaskType)
    .register(researchTaskType)
    .register(analystTaskType)
    .register(writerTaskType)
    .register(coordinatorTaskType)
    .registerTemplate(seedReportTemplate);
}
