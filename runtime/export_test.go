package runtime

// TaskDir is the task's private host directory, for the tests' checks of
// what a step left.
var TaskDir = (*Manager).taskDir
