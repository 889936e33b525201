//! Row-wise Adam for large embedding tables (`model.sparse_updates`, PyTorch's `SparseAdam`): a
//! step reads and writes only the rows its batch used, so its cost follows the batch instead of
//! the catalogue. burn's embedding gradient is a dense table, and a dense Adam step then touches
//! every row (70 M values for a million customers and 100,000 items, for 2,048 interactions).
//! As in PyTorch and TensorFlow's LazyAdam, the moments of rows a batch did not use stay as they
//! were instead of decaying; L2 (`train.optimizer.weight_decay`) applies to the rows used.

use burn::module::{Param, ParamId};
use burn::prelude::*;
use burn::tensor::IndexingUpdateOp;

use super::index_tensor;
use vitrine_core::config::OptimizerConfig;

/// Adam's moments for each table `[rows, d]` and the steps taken.
#[derive(Module, Debug)]
pub struct RowAdam {
    first: Vec<Param<Tensor<2>>>,
    second: Vec<Param<Tensor<2>>>,
    steps: Param<Tensor<1>>,
    beta1: f64,
    beta2: f64,
    epsilon: f64,
    weight_decay: f64,
}

impl RowAdam {
    /// Zero moments for tables of `shapes`, on the plain (non-autodiff) `device`.
    pub fn new(shapes: &[[usize; 2]], config: &OptimizerConfig, device: &Device) -> Self {
        let zeros = |shape: &[usize; 2]| Param::from_tensor(Tensor::zeros(*shape, device)).set_require_grad(false);
        Self {
            first: shapes.iter().map(zeros).collect(),
            second: shapes.iter().map(zeros).collect(),
            steps: Param::from_tensor(Tensor::zeros([1], device)).set_require_grad(false),
            beta1: config.beta1,
            beta2: config.beta2,
            epsilon: config.epsilon,
            weight_decay: config.weight_decay,
        }
    }

    /// Counts a step; its number, from 1.
    pub fn next_step(&mut self) -> i32 {
        let steps = self.steps.val() + 1.0;
        let step = steps.clone().into_scalar::<f32>() as i32;
        self.steps = Param::initialized(self.steps.id, steps).set_require_grad(false);
        step
    }

    /// Table `table`'s `rows` (distinct) moved by their gradients `grad` `[rows.len(), d]`
    /// at learning rate `lr` in step `step`; `weight` is the table's parameter (autodiff device).
    pub fn update(&mut self, table: usize, weight: &mut Param<Tensor<2>>, rows: &[u32], grad: Tensor<2>, lr: f64, step: i32) {
        let device = grad.device();
        let rows = index_tensor(rows, &device);
        let grad = match self.weight_decay {
            0.0 => grad,
            decay => grad + weight.val().inner().select(0, rows.clone()) * decay,
        };
        let first = self.first[table].val().select(0, rows.clone()) * self.beta1 + grad.clone() * (1.0 - self.beta1);
        let second = self.second[table].val().select(0, rows.clone()) * self.beta2 + grad.powi_scalar(2) * (1.0 - self.beta2);
        let replace = |table: Tensor<2>, values: Tensor<2>| table.select_assign(0, rows.clone(), values, IndexingUpdateOp::Assign);
        in_place(&mut self.first[table], |t| replace(t, first.clone()));
        in_place(&mut self.second[table], |t| replace(t, second.clone()));
        let first_hat = first / (1.0 - self.beta1.powi(step));
        let second_hat = second / (1.0 - self.beta2.powi(step));
        let delta = first_hat / (second_hat.sqrt() + self.epsilon) * (-lr);
        in_place(weight, |w| Tensor::from_inner(w.inner().select_assign(0, rows.clone(), delta, IndexingUpdateOp::Add)).require_grad());
    }
}

/// Applies `f` to the tensor of `param` while nothing else holds it, so a CPU backend writes the
/// few rows in place instead of copying the whole table.
fn in_place(param: &mut Param<Tensor<2>>, f: impl FnOnce(Tensor<2>) -> Tensor<2>) {
    let device = param.lazy_device();
    let placeholder = Param::initialized(ParamId::new(), Tensor::zeros([1, 1], &device));
    let (id, tensor, mapper) = std::mem::replace(param, placeholder).consume();
    *param = Param::from_mapped_value(id, f(tensor), mapper);
}

/// The distinct values of `ids`, sorted, and each id's position among them.
pub fn distinct_rows(ids: &[i64]) -> (Vec<u32>, Vec<u32>) {
    let mut rows: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
    rows.sort_unstable();
    rows.dedup();
    let positions = ids.iter().map(|&i| rows.binary_search(&(i as u32)).expect("a row of its own list") as u32).collect();
    (rows, positions)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distinct_rows_map_back() {
        let (rows, positions) = distinct_rows(&[7, 3, 7, 9, 3]);
        assert_eq!(rows, [3, 7, 9]);
        assert_eq!(positions, [1, 0, 1, 2, 0]);
    }

    #[test]
    fn a_row_step_is_adams_step_on_those_rows_and_leaves_the_others() {
        let device = Device::flex();
        let config = OptimizerConfig { lr: 0.1, ..OptimizerConfig::default() };
        let mut adam = RowAdam::new(&[[4, 2]], &config, &device);
        let mut weight =
            Param::from_tensor(Tensor::<2>::from_data(TensorData::new(vec![1.0f32, 2., 3., 4., 5., 6., 7., 8.], [4, 2]), &device.clone().autodiff()));
        let grad = Tensor::<2>::from_data(TensorData::new(vec![0.5f32, -2.0, 1.0, 0.0], [2, 2]), &device);
        let step = adam.next_step();
        adam.update(0, &mut weight, &[1, 3], grad, 0.1, step);
        let values = weight.val().inner().into_data().try_into_vec::<f32>().unwrap();
        // Adam's first step moves each weight by lr · sign(gradient) (0 where the gradient is 0).
        let want = [1.0, 2.0, 3.0 - 0.1, 4.0 + 0.1, 5.0, 6.0, 7.0 - 0.1, 8.0];
        for (got, want) in values.iter().zip(want) {
            assert!((got - want).abs() < 1e-5, "{values:?}");
        }
        assert_eq!(step, 1);
        assert_eq!(adam.next_step(), 2, "steps count on");
    }
}
