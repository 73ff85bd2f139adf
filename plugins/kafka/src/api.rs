//! The Kafka API keys: names, newest known versions, the first flexible
//! version, and error code names (from the protocol's message definitions,
//! `clients/src/main/resources/common/message/*.json`).

/// (key, name, newest version known, first flexible version or `u16::MAX`).
const APIS: [(i16, &str, i16, i16); 88] = [
    (0, "Produce", 11, 9),
    (1, "Fetch", 17, 12),
    (2, "ListOffsets", 10, 6),
    (3, "Metadata", 12, 9),
    (4, "LeaderAndIsr", 7, 4),
    (5, "StopReplica", 4, 2),
    (6, "UpdateMetadata", 8, 6),
    (7, "ControlledShutdown", 3, 3),
    (8, "OffsetCommit", 9, 8),
    (9, "OffsetFetch", 9, 6),
    (10, "FindCoordinator", 6, 3),
    (11, "JoinGroup", 9, 6),
    (12, "Heartbeat", 4, 4),
    (13, "LeaveGroup", 5, 4),
    (14, "SyncGroup", 5, 4),
    (15, "DescribeGroups", 5, 5),
    (16, "ListGroups", 5, 3),
    (17, "SaslHandshake", 1, i16::MAX),
    (18, "ApiVersions", 4, 3),
    (19, "CreateTopics", 7, 5),
    (20, "DeleteTopics", 6, 4),
    (21, "DeleteRecords", 2, 2),
    (22, "InitProducerId", 5, 2),
    (23, "OffsetForLeaderEpoch", 4, 4),
    (24, "AddPartitionsToTxn", 5, 3),
    (25, "AddOffsetsToTxn", 4, 3),
    (26, "EndTxn", 5, 3),
    (27, "WriteTxnMarkers", 1, 1),
    (28, "TxnOffsetCommit", 4, 3),
    (29, "DescribeAcls", 3, 2),
    (30, "CreateAcls", 3, 2),
    (31, "DeleteAcls", 3, 2),
    (32, "DescribeConfigs", 4, 4),
    (33, "AlterConfigs", 2, 2),
    (34, "AlterReplicaLogDirs", 2, 2),
    (35, "DescribeLogDirs", 4, 2),
    (36, "SaslAuthenticate", 2, 2),
    (37, "CreatePartitions", 3, 2),
    (38, "CreateDelegationToken", 3, 2),
    (39, "RenewDelegationToken", 2, 2),
    (40, "ExpireDelegationToken", 2, 2),
    (41, "DescribeDelegationToken", 3, 2),
    (42, "DeleteGroups", 2, 2),
    (43, "ElectLeaders", 2, 2),
    (44, "IncrementalAlterConfigs", 1, 1),
    (45, "AlterPartitionReassignments", 0, 0),
    (46, "ListPartitionReassignments", 0, 0),
    (47, "OffsetDelete", 0, i16::MAX),
    (48, "DescribeClientQuotas", 1, 1),
    (49, "AlterClientQuotas", 1, 1),
    (50, "DescribeUserScramCredentials", 0, 0),
    (51, "AlterUserScramCredentials", 0, 0),
    (52, "Vote", 1, 0),
    (53, "BeginQuorumEpoch", 1, 1),
    (54, "EndQuorumEpoch", 1, 1),
    (55, "DescribeQuorum", 2, 0),
    (56, "AlterPartition", 3, 0),
    (57, "UpdateFeatures", 2, 0),
    (58, "Envelope", 0, 0),
    (59, "FetchSnapshot", 1, 0),
    (60, "DescribeCluster", 1, 0),
    (61, "DescribeProducers", 0, 0),
    (62, "BrokerRegistration", 4, 0),
    (63, "BrokerHeartbeat", 1, 0),
    (64, "UnregisterBroker", 0, 0),
    (65, "DescribeTransactions", 0, 0),
    (66, "ListTransactions", 1, 0),
    (67, "AllocateProducerIds", 0, 0),
    (68, "ConsumerGroupHeartbeat", 1, 0),
    (69, "ConsumerGroupDescribe", 0, 0),
    (70, "ControllerRegistration", 0, 0),
    (71, "GetTelemetrySubscriptions", 0, 0),
    (72, "PushTelemetry", 0, 0),
    (73, "AssignReplicasToDirs", 0, 0),
    (74, "ListClientMetricsResources", 0, 0),
    (75, "DescribeTopicPartitions", 0, 0),
    (76, "ShareGroupHeartbeat", 0, 0),
    (77, "ShareGroupDescribe", 0, 0),
    (78, "ShareFetch", 0, 0),
    (79, "ShareAcknowledge", 0, 0),
    (80, "AddRaftVoter", 0, 0),
    (81, "RemoveRaftVoter", 0, 0),
    (82, "UpdateRaftVoter", 0, 0),
    (83, "InitializeShareGroupState", 0, 0),
    (84, "ReadShareGroupState", 0, 0),
    (85, "WriteShareGroupState", 0, 0),
    (86, "DeleteShareGroupState", 0, 0),
    (87, "ReadShareGroupStateSummary", 0, 0),
];

/// Versions beyond the newest known that are still believed (newer brokers
/// add versions; their header is the same).
pub const VERSION_SLACK: i16 = 4;

/// Well-known API keys.
pub mod key {
    /// Produce.
    pub const PRODUCE: i16 = 0;
    /// Fetch.
    pub const FETCH: i16 = 1;
    /// ListOffsets.
    pub const LIST_OFFSETS: i16 = 2;
    /// Metadata.
    pub const METADATA: i16 = 3;
    /// OffsetCommit.
    pub const OFFSET_COMMIT: i16 = 8;
    /// OffsetFetch.
    pub const OFFSET_FETCH: i16 = 9;
    /// FindCoordinator.
    pub const FIND_COORDINATOR: i16 = 10;
    /// JoinGroup.
    pub const JOIN_GROUP: i16 = 11;
    /// Heartbeat.
    pub const HEARTBEAT: i16 = 12;
    /// LeaveGroup.
    pub const LEAVE_GROUP: i16 = 13;
    /// SyncGroup.
    pub const SYNC_GROUP: i16 = 14;
    /// DescribeGroups.
    pub const DESCRIBE_GROUPS: i16 = 15;
    /// ListGroups.
    pub const LIST_GROUPS: i16 = 16;
    /// SaslHandshake.
    pub const SASL_HANDSHAKE: i16 = 17;
    /// ApiVersions.
    pub const API_VERSIONS: i16 = 18;
    /// CreateTopics.
    pub const CREATE_TOPICS: i16 = 19;
    /// InitProducerId.
    pub const INIT_PRODUCER_ID: i16 = 22;
    /// SaslAuthenticate.
    pub const SASL_AUTHENTICATE: i16 = 36;
}

/// The API's name, if the key is known.
pub fn name(key: i16) -> Option<&'static str> {
    usize::try_from(key)
        .ok()
        .and_then(|k| APIS.get(k))
        .map(|a| a.1)
}

/// Whether `version` of `key` is believable (known key, version at most a
/// few beyond the newest known).
pub fn known(key: i16, version: i16) -> bool {
    usize::try_from(key)
        .ok()
        .and_then(|k| APIS.get(k))
        .is_some_and(|a| (0..=a.2 + VERSION_SLACK).contains(&version))
}

/// Whether `version` of `key` uses the flexible (compact, tagged) encoding.
pub fn flexible(key: i16, version: i16) -> bool {
    usize::try_from(key)
        .ok()
        .and_then(|k| APIS.get(k))
        .is_some_and(|a| version >= a.3)
}

/// Whether the response to `version` of `key` has a tagged section in its
/// header (ApiVersions never does: KIP-511).
pub fn flexible_response_header(key: i16, version: i16) -> bool {
    key != key::API_VERSIONS && flexible(key, version)
}

/// Error code names (`UNKNOWN_TOPIC_OR_PARTITION`), from the protocol's
/// `Errors` table.
const ERRORS: [&str; 83] = [
    "NONE",
    "OFFSET_OUT_OF_RANGE",
    "CORRUPT_MESSAGE",
    "UNKNOWN_TOPIC_OR_PARTITION",
    "INVALID_FETCH_SIZE",
    "LEADER_NOT_AVAILABLE",
    "NOT_LEADER_OR_FOLLOWER",
    "REQUEST_TIMED_OUT",
    "BROKER_NOT_AVAILABLE",
    "REPLICA_NOT_AVAILABLE",
    "MESSAGE_TOO_LARGE",
    "STALE_CONTROLLER_EPOCH",
    "OFFSET_METADATA_TOO_LARGE",
    "NETWORK_EXCEPTION",
    "COORDINATOR_LOAD_IN_PROGRESS",
    "COORDINATOR_NOT_AVAILABLE",
    "NOT_COORDINATOR",
    "INVALID_TOPIC_EXCEPTION",
    "RECORD_LIST_TOO_LARGE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "INVALID_REQUIRED_ACKS",
    "ILLEGAL_GENERATION",
    "INCONSISTENT_GROUP_PROTOCOL",
    "INVALID_GROUP_ID",
    "UNKNOWN_MEMBER_ID",
    "INVALID_SESSION_TIMEOUT",
    "REBALANCE_IN_PROGRESS",
    "INVALID_COMMIT_OFFSET_SIZE",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "INVALID_TIMESTAMP",
    "UNSUPPORTED_SASL_MECHANISM",
    "ILLEGAL_SASL_STATE",
    "UNSUPPORTED_VERSION",
    "TOPIC_ALREADY_EXISTS",
    "INVALID_PARTITIONS",
    "INVALID_REPLICATION_FACTOR",
    "INVALID_REPLICA_ASSIGNMENT",
    "INVALID_CONFIG",
    "NOT_CONTROLLER",
    "INVALID_REQUEST",
    "UNSUPPORTED_FOR_MESSAGE_FORMAT",
    "POLICY_VIOLATION",
    "OUT_OF_ORDER_SEQUENCE_NUMBER",
    "DUPLICATE_SEQUENCE_NUMBER",
    "INVALID_PRODUCER_EPOCH",
    "INVALID_TXN_STATE",
    "INVALID_PRODUCER_ID_MAPPING",
    "INVALID_TRANSACTION_TIMEOUT",
    "CONCURRENT_TRANSACTIONS",
    "TRANSACTION_COORDINATOR_FENCED",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED",
    "SECURITY_DISABLED",
    "OPERATION_NOT_ATTEMPTED",
    "KAFKA_STORAGE_ERROR",
    "LOG_DIR_NOT_FOUND",
    "SASL_AUTHENTICATION_FAILED",
    "UNKNOWN_PRODUCER_ID",
    "REASSIGNMENT_IN_PROGRESS",
    "DELEGATION_TOKEN_AUTH_DISABLED",
    "DELEGATION_TOKEN_NOT_FOUND",
    "DELEGATION_TOKEN_OWNER_MISMATCH",
    "DELEGATION_TOKEN_REQUEST_NOT_ALLOWED",
    "DELEGATION_TOKEN_AUTHORIZATION_FAILED",
    "DELEGATION_TOKEN_EXPIRED",
    "INVALID_PRINCIPAL_TYPE",
    "NON_EMPTY_GROUP",
    "GROUP_ID_NOT_FOUND",
    "FETCH_SESSION_ID_NOT_FOUND",
    "INVALID_FETCH_SESSION_EPOCH",
    "LISTENER_NOT_FOUND",
    "TOPIC_DELETION_DISABLED",
    "FENCED_LEADER_EPOCH",
    "UNKNOWN_LEADER_EPOCH",
    "UNSUPPORTED_COMPRESSION_TYPE",
    "STALE_BROKER_EPOCH",
    "OFFSET_NOT_AVAILABLE",
    "MEMBER_ID_REQUIRED",
    "PREFERRED_LEADER_NOT_AVAILABLE",
    "GROUP_MAX_SIZE_REACHED",
    "FENCED_INSTANCE_ID",
];

/// The error code's name (`UNKNOWN_SERVER_ERROR` for -1; `ERROR_<n>` for
/// codes newer than this table).
pub fn error_name(code: i16) -> String {
    if code == -1 {
        return "UNKNOWN_SERVER_ERROR".to_string();
    }
    usize::try_from(code)
        .ok()
        .and_then(|c| ERRORS.get(c))
        .map_or_else(|| format!("ERROR_{code}"), |s| (*s).to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_indexed_by_key() {
        for (i, a) in APIS.iter().enumerate() {
            assert_eq!(a.0 as usize, i);
        }
        assert_eq!(name(1), Some("Fetch"));
        assert!(flexible(1, 12) && !flexible(1, 11));
        assert!(!flexible_response_header(18, 3));
        assert!(!flexible(17, 1));
        assert_eq!(error_name(3), "UNKNOWN_TOPIC_OR_PARTITION");
        assert_eq!(error_name(82), "FENCED_INSTANCE_ID");
        assert_eq!(error_name(-1), "UNKNOWN_SERVER_ERROR");
        assert_eq!(error_name(200), "ERROR_200");
    }
}
