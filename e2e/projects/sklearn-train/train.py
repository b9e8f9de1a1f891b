"""Trains an ElasticNet on scikit-learn's bundled diabetes data and logs it with mlflow.

Run by `mlflow run` or `ferroflow run`, which set MLFLOW_TRACKING_URI and MLFLOW_RUN_ID:
start_run() continues the run they created. Deterministic, so two runs can be compared.
"""

import argparse

import mlflow
import mlflow.sklearn
from sklearn.datasets import load_diabetes
from sklearn.linear_model import ElasticNet
from sklearn.metrics import mean_absolute_error, mean_squared_error, r2_score
from sklearn.model_selection import train_test_split


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--alpha", type=float, required=True)
    parser.add_argument("--l1-ratio", type=float, required=True)
    parser.add_argument("--max-iter", type=int, required=True)
    parser.add_argument("--label", required=True)
    args = parser.parse_args()

    features, target = load_diabetes(return_X_y=True)
    train_x, test_x, train_y, test_y = train_test_split(features, target, test_size=0.25, random_state=42)
    model = ElasticNet(alpha=args.alpha, l1_ratio=args.l1_ratio, max_iter=args.max_iter, random_state=42)
    model.fit(train_x, train_y)
    predicted = model.predict(test_x)

    with mlflow.start_run():
        mlflow.set_tag("label", args.label)
        mlflow.log_metrics(
            {
                "rmse": mean_squared_error(test_y, predicted) ** 0.5,
                "mae": mean_absolute_error(test_y, predicted),
                "r2": r2_score(test_y, predicted),
            }
        )
        # Requirements given, so logging does not spend time inferring them.
        mlflow.sklearn.log_model(model, name="model", pip_requirements=["scikit-learn==1.9.1"])
    print(f"trained ElasticNet(alpha={args.alpha}, l1_ratio={args.l1_ratio})")


if __name__ == "__main__":
    main()
