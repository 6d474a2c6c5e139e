"""A deployed stack as moto's CloudFormation serves it: the resources the operator commands
use (source queue and DLQ with its redrive policy, the sync and orders tables, the orders
table's stream, the function with its SQS and stream event source mappings, the
reconciliation's schedule, the alarm topic, the token parameter) created by moto's
CloudFormation, and the outputs template.yaml declares, naming them. moto's CloudFormation
does not create CloudWatch alarms or SNS subscriptions, so those are made with boto3, named
as CloudFormation names them ("<stack>-<LogicalId>-<random>")."""

import json

import boto3

from support import suffix


def template(role_arn, token_parameter):
    return {
        "Parameters": {"ShadowMode": {"Type": "String", "Default": "false"},
                       "PolarApiUrl": {"Type": "String", "Default": "https://sandbox-api.polar.sh/v1"}},
        "Resources": {
            "RedemptionDeadLetterQueue": {"Type": "AWS::SQS::Queue", "Properties": {"MessageRetentionPeriod": 1209600}},
            "RedemptionQueue": {"Type": "AWS::SQS::Queue", "Properties": {
                "VisibilityTimeout": 180, "RedrivePolicy": {
                    "deadLetterTargetArn": {"Fn::GetAtt": ["RedemptionDeadLetterQueue", "Arn"]}, "maxReceiveCount": 33}}},
            "SyncTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
                "BillingMode": "PAY_PER_REQUEST", "AttributeDefinitions": [{"AttributeName": "pk", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "pk", "KeyType": "HASH"}]}},
            "OrdersTable": {"Type": "AWS::DynamoDB::Table", "Properties": {
                "BillingMode": "PAY_PER_REQUEST", "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
                "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
                "StreamSpecification": {"StreamViewType": "NEW_AND_OLD_IMAGES"}}},
            "SyncFunction": {"Type": "AWS::Lambda::Function", "Properties": {
                "Runtime": "provided.al2023", "Handler": "bootstrap", "Role": role_arn, "Architectures": ["arm64"],
                "Code": {"ZipFile": "placeholder"}}},
            "SyncFunctionRedemptions": {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
                "FunctionName": {"Ref": "SyncFunction"}, "EventSourceArn": {"Fn::GetAtt": ["RedemptionQueue", "Arn"]},
                "BatchSize": 100, "FunctionResponseTypes": ["ReportBatchItemFailures"]}},
            "SyncFunctionOrdersStream": {"Type": "AWS::Lambda::EventSourceMapping", "Properties": {
                "FunctionName": {"Ref": "SyncFunction"}, "EventSourceArn": {"Fn::GetAtt": ["OrdersTable", "StreamArn"]},
                "StartingPosition": "LATEST"}},
            "SyncFunctionReconcile": {"Type": "AWS::Events::Rule", "Properties": {
                "ScheduleExpression": "rate(5 minutes)", "State": "ENABLED",
                "Targets": [{"Arn": {"Fn::GetAtt": ["SyncFunction", "Arn"]}, "Id": "SyncFunctionReconcileLambdaTarget"}]}},
            "AlarmTopic": {"Type": "AWS::SNS::Topic"},
            "TokenParameter": {"Type": "AWS::SSM::Parameter", "Properties": {
                "Name": token_parameter, "Type": "String", "Value": "replaced-by-put-token"}},
        },
        "Outputs": {
            "QueueUrl": {"Value": {"Ref": "RedemptionQueue"}},
            "QueueArn": {"Value": {"Fn::GetAtt": ["RedemptionQueue", "Arn"]}},
            "DeadLetterQueueUrl": {"Value": {"Ref": "RedemptionDeadLetterQueue"}},
            "DeadLetterQueueArn": {"Value": {"Fn::GetAtt": ["RedemptionDeadLetterQueue", "Arn"]}},
            "SyncTableName": {"Value": {"Ref": "SyncTable"}},
            "OrdersTableName": {"Value": {"Ref": "OrdersTable"}},
            "FunctionName": {"Value": {"Ref": "SyncFunction"}},
            "FunctionArn": {"Value": {"Fn::GetAtt": ["SyncFunction", "Arn"]}},
            "TokenParameterName": {"Value": token_parameter},
            "AlarmTopicArn": {"Value": {"Ref": "AlarmTopic"}},
        },
    }


class Stack:
    ALARMS = ("DeadLetterQueueAlarm", "ConfigurationErrorsAlarm", "QueueAgeAlarm")

    def __init__(self, polar_api_url="http://127.0.0.1:9/v1"):
        s = suffix()
        self.name = f"pds-{s}"
        self.token_parameter = f"/polar-discount-sync-{s}/polar-access-token"
        role = boto3.client("iam").create_role(RoleName=f"pds-fn-{s}", AssumeRolePolicyDocument=json.dumps({
            "Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Principal": {"Service": "lambda.amazonaws.com"},
                                                    "Action": "sts:AssumeRole"}]}))["Role"]["Arn"]
        cloudformation = boto3.client("cloudformation")
        cloudformation.create_stack(StackName=self.name, TemplateBody=json.dumps(template(role, self.token_parameter)),
                                    Parameters=[{"ParameterKey": "ShadowMode", "ParameterValue": "true"}],
                                    Capabilities=["CAPABILITY_IAM"])
        self.description = cloudformation.describe_stacks(StackName=self.name)["Stacks"][0]
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in self.description["Outputs"]}
        self.cloudwatch = boto3.client("cloudwatch")
        self.alarm_names = []
        for logical in self.ALARMS:
            name = f"{self.name}-{logical}-{suffix().upper()}"
            self.cloudwatch.put_metric_alarm(
                AlarmName=name, Namespace="PolarDiscountSync", MetricName="ConfigurationErrors", Statistic="Sum",
                Period=300, EvaluationPeriods=1, Threshold=0, ComparisonOperator="GreaterThanThreshold",
                AlarmActions=[self.outputs["AlarmTopicArn"]], TreatMissingData="notBreaching")
            self.cloudwatch.set_alarm_state(AlarmName=name, StateValue="OK", StateReason="deployed")
            self.alarm_names.append(name)
        boto3.client("sns").subscribe(TopicArn=self.outputs["AlarmTopicArn"], Protocol="email",
                                      Endpoint="oncall@example.com")
        self.function_env = {"ORDERS_TABLE": self.outputs["OrdersTableName"], "SYNC_TABLE": self.outputs["SyncTableName"],
                             "DEAD_LETTER_QUEUE_URL": self.outputs["DeadLetterQueueUrl"],
                             "REDEMPTION_QUEUE_URL": self.outputs["QueueUrl"],
                             "POLAR_API_URL": polar_api_url, "POLAR_ACCESS_TOKEN": "polar_oat_unused"}
        self.sqs = boto3.client("sqs")

    def mapping_states(self):
        found = boto3.client("lambda").list_event_source_mappings(FunctionName=self.outputs["FunctionName"])
        return sorted((m["EventSourceArn"].split(":")[2], m["State"]) for m in found["EventSourceMappings"])

    def queue_counts(self, url):
        attributes = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=[
            "ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
        return int(attributes["ApproximateNumberOfMessages"]), int(attributes["ApproximateNumberOfMessagesNotVisible"])
